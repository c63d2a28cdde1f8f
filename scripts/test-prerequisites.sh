#!/usr/bin/env bash
# Makes sure what the integration tests talk to is there: OpenSSH's sshd
# (the tests start their own on loopback, as fake VMs) and a RabbitMQ broker
# on 127.0.0.1:5672. Installs/starts them when it can (as root on Debian),
# otherwise says what to do. Run by `npm test` before vitest.
set -euo pipefail

say() { echo "test prerequisites: $*" >&2; }
can_install() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }

missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh-keygen >/dev/null || missing+=(openssh-client)
command -v rabbitmq-server >/dev/null || missing+=(rabbitmq-server)
if [ ${#missing[@]} -gt 0 ]; then
  if can_install; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    say "missing ${missing[*]}: install them (Debian: apt-get install ${missing[*]})"
    exit 1
  fi
fi

broker_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
if ! broker_up; then
  if [ "$(id -u)" = 0 ]; then
    say "starting RabbitMQ"
    rabbitmq-server -detached >/dev/null 2>&1 || true
    for _ in $(seq 1 120); do broker_up && break; sleep 0.5; done
  fi
  broker_up || { say "no RabbitMQ on 127.0.0.1:5672 (start it with: rabbitmq-server -detached)"; exit 1; }
fi
# Log sharding (TRAVIS_WORKER_RABBITMQ_SHARDING) needs the x-modulus-hash
# exchange type of this plugin; enabling it on a running broker is online.
if [ "$(id -u)" = 0 ] && ! rabbitmq-plugins -q is_enabled rabbitmq_sharding >/dev/null 2>&1; then
  rabbitmq-plugins -q enable rabbitmq_sharding >/dev/null || say "could not enable rabbitmq_sharding; the sharding test checks the error instead"
fi
# The port opens before the broker finishes booting; rabbitmqctl (used by
# the tests to make a vhost each) needs it fully up.
rabbitmqctl -q await_startup >/dev/null 2>&1 || rabbitmqctl -q status >/dev/null
