#!/usr/bin/env bash
# Makes sure what the integration tests talk to is there: OpenSSH's sshd
# (the tests start their own on loopback, as fake VMs), a RabbitMQ broker
# on 127.0.0.1:5672, Prometheus and Go's pprof, and a Docker engine of the
# tests' own. Installs/starts them when it can (as root on Debian), otherwise
# says what to do. Run by `npm test` before vitest.
set -euo pipefail

say() { echo "test prerequisites: $*" >&2; }
can_install() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }
# Install Debian packages (as root), saying which; fails when apt does.
install_packages() {
  say "installing $*"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh-keygen >/dev/null || missing+=(openssh-client)
command -v rabbitmq-server >/dev/null || missing+=(rabbitmq-server)
# The real clients of what the worker serves: Prometheus scrapes /metrics and
# promtool checks it and the alert rules; `go tool pprof` reads the profiles.
command -v prometheus >/dev/null && command -v promtool >/dev/null || missing+=(prometheus)
command -v go >/dev/null || missing+=(golang-go)
if [ ${#missing[@]} -gt 0 ]; then
  if can_install; then
    install_packages "${missing[@]}"
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

# --- Docker engine for the docker backend's tests -------------------------
# A dockerd of our own (own socket, data root, exec root), started only when
# it is not up already, that leaves the host's networking alone: no iptables
# rules, no masquerading, no docker0. Containers join a user-defined bridge
# network whose addresses the host reaches directly. The job image is a
# Debian root filesystem made with debootstrap (no registry is reachable),
# cached as a tarball, with a `travis` user and an /sbin/init that runs sshd.
# Failing here does not stop the other tests: the docker tests then fail in
# CI (CI=true) and skip loudly elsewhere, saying the engine is missing.
# shellcheck source=scripts/test-engine.sh
. "$(dirname "$0")/test-engine.sh"
MAYFLY_DOCKER_DATA_ROOT=/var/lib/mayfly-test-docker
MAYFLY_DOCKER_EXEC_ROOT=/run/mayfly-test-docker
MAYFLY_DOCKER_PIDFILE=/run/mayfly-test-docker.pid
MAYFLY_DOCKER_LOG=/var/log/mayfly-test-dockerd.log
MAYFLY_DOCKER_NETWORK=mayfly-test
# A private range nothing else on these machines uses (the host is on 192.0.2.0/24, fake VMs on 10.200.N.0).
MAYFLY_DOCKER_SUBNET=10.213.77.0/24
# Bump when the customisation below changes: the image is rebuilt from the cached rootfs.
MAYFLY_IMAGE_REVISION=2

start_dockerd() { # $1: storage driver. (fd 9 is the setup lock: the daemon must not keep it.)
  mkdir -p "$MAYFLY_DOCKER_DATA_ROOT" "$MAYFLY_DOCKER_EXEC_ROOT"
  nohup dockerd \
    --data-root "$MAYFLY_DOCKER_DATA_ROOT" --exec-root "$MAYFLY_DOCKER_EXEC_ROOT" \
    --pidfile "$MAYFLY_DOCKER_PIDFILE" --host "unix://$MAYFLY_DOCKER_SOCKET" \
    --storage-driver "$1" --iptables=false --ip6tables=false --ip-masq=false --bridge=none \
    >>"$MAYFLY_DOCKER_LOG" 2>&1 </dev/null 9>&- &
  for _ in $(seq 1 60); do docker_up && return 0; sleep 0.5; done
  return 1
}

stop_dockerd() {
  local pid
  pid=$(cat "$MAYFLY_DOCKER_PIDFILE" 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
}

# The slow part (about 50 s, from Debian's mirror), cached across runs.
build_rootfs_tar() {
  local dir
  dir=$(mktemp -d /var/tmp/mayfly-rootfs.XXXXXX)
  say "debootstrapping the docker test image's root filesystem (about a minute, once)"
  if ! debootstrap --variant=minbase --include=openssh-server,iproute2,procps bookworm "$dir" >"$dir.log" 2>&1; then
    say "debootstrap failed (see $dir.log)"
    rm -rf "$dir"
    return 1
  fi
  mkdir -p "$MAYFLY_CACHE"
  tar -C "$dir" -c . >"$MAYFLY_ROOTFS_TAR.tmp" && mv "$MAYFLY_ROOTFS_TAR.tmp" "$MAYFLY_ROOTFS_TAR"
  rm -rf "$dir" "$dir.log"
}

# The job image: the cached rootfs plus a `travis` user and an init that runs sshd.
build_job_image() {
  local dir
  dir=$(mktemp -d /var/tmp/mayfly-image.XXXXXX)
  # This runs where errexit is off (inside `if !`): every step says whether it worked.
  tar -C "$dir" -xf "$MAYFLY_ROOTFS_TAR" &&
    chroot "$dir" useradd --create-home --shell /bin/bash travis &&
    # Not locked ('!'), but no password either: keys only.
    chroot "$dir" usermod -p '*' travis || { rm -rf "$dir"; return 1; }
  cat >"$dir/etc/ssh/sshd_config.d/mayfly-test.conf" <<'CONF'
# PAM's session modules (loginuid) fail inside a container; keys are all the tests use.
UsePAM no
PasswordAuthentication no
CONF
  cat >"$dir/sbin/init" <<'INIT'
#!/bin/sh
# The test image's init: sshd in the foreground as PID 1 (it exits on SIGTERM,
# so a container stops at once). /run is a fresh tmpfs, so privsep's directory is made here.
# PID 1 ignores signals it has no handler for: a stop that comes before sshd is up must still work.
trap 'exit 143' TERM
mkdir -p /run/sshd
exec /usr/sbin/sshd -D -e
INIT
  chmod 0755 "$dir/sbin/init"
  local ok=0
  tar -C "$dir" -c . | mdocker import --change "LABEL mayfly.test-image=$MAYFLY_IMAGE_REVISION" - travis:default >/dev/null &&
    mdocker tag travis:default default || ok=1
  rm -rf "$dir"
  return $ok
}

prepare_docker() {
  if [ "$(id -u)" != 0 ]; then say "not root: cannot start the test Docker engine"; return 1; fi
  local need=()
  command -v dockerd >/dev/null || need+=(docker.io)
  command -v debootstrap >/dev/null || need+=(debootstrap)
  if [ ${#need[@]} -gt 0 ]; then
    install_packages "${need[@]}" || { say "could not install ${need[*]}"; return 1; }
  fi
  if ! docker_up; then
    stop_dockerd
    say "starting the test Docker engine on $MAYFLY_DOCKER_SOCKET"
    # overlay2 is fast when the kernel and the data root's filesystem allow it; vfs always works.
    if ! start_dockerd overlay2; then
      stop_dockerd
      say "dockerd did not come up with overlay2, trying vfs"
      start_dockerd vfs || { say "dockerd did not start (see $MAYFLY_DOCKER_LOG)"; return 1; }
    fi
  fi
  mdocker network inspect "$MAYFLY_DOCKER_NETWORK" >/dev/null 2>&1 ||
    mdocker network create --driver bridge --subnet "$MAYFLY_DOCKER_SUBNET" "$MAYFLY_DOCKER_NETWORK" >/dev/null ||
    { say "could not create the docker network $MAYFLY_DOCKER_NETWORK"; return 1; }
  if [ "$(mdocker image inspect --format '{{index .Config.Labels "mayfly.test-image"}}' travis:default 2>/dev/null)" != "$MAYFLY_IMAGE_REVISION" ]; then
    [ -s "$MAYFLY_ROOTFS_TAR" ] || build_rootfs_tar || return 1
    say "building the docker test image travis:default"
    build_job_image || { say "could not build the docker test image"; return 1; }
  fi
}

# One runner at a time: two test runs must not both start an engine.
mkdir -p "$MAYFLY_CACHE"
if ! (flock 9 && prepare_docker) 9>"$MAYFLY_CACHE/.lock"; then
  say "the docker backend tests will fail in CI and be skipped elsewhere: no test Docker engine"
fi

# --- QEMU and a small guest for the qemu backend's tests ------------------
# QEMU (TCG is enough: CI has no usable KVM), qemu-img, and what the backend
# builds each VM's NoCloud seed with (dosfstools' mkfs.vfat, mtools' mcopy).
# The guest is built once from the docker image's cached debootstrap tree
# (scripts/qemu-test-guest.sh: golden qcow2, Debian's cloud kernel, a small
# initramfs; cpio and kmod's depmod make the initramfs) and cached. Failing
# here does not stop the other tests: the qemu tests then fail, saying why.
MAYFLY_QEMU_GUEST=$MAYFLY_CACHE/qemu
# Bump when scripts/qemu-test-guest.sh changes: the guest is rebuilt.
MAYFLY_QEMU_GUEST_REVISION=1

prepare_qemu() {
  if [ "$(id -u)" != 0 ]; then say "not root: cannot install QEMU or build the qemu test guest"; return 1; fi
  local need=()
  command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
  command -v qemu-img >/dev/null || need+=(qemu-utils)
  command -v mkfs.vfat >/dev/null || need+=(dosfstools)
  command -v mcopy >/dev/null || need+=(mtools)
  command -v cpio >/dev/null || need+=(cpio)
  command -v depmod >/dev/null || need+=(kmod)
  command -v debootstrap >/dev/null || need+=(debootstrap)
  if [ ${#need[@]} -gt 0 ]; then
    install_packages "${need[@]}" || { say "could not install ${need[*]}"; return 1; }
  fi
  if [ "$(cat "$MAYFLY_QEMU_GUEST/revision" 2>/dev/null)" != "$MAYFLY_QEMU_GUEST_REVISION" ]; then
    [ -s "$MAYFLY_ROOTFS_TAR" ] || build_rootfs_tar || return 1
    say "building the qemu test guest (about half a minute, once)"
    bash "$(dirname "$0")/qemu-test-guest.sh" "$MAYFLY_QEMU_GUEST" "$MAYFLY_ROOTFS_TAR" || { say "could not build the qemu test guest"; return 1; }
    echo "$MAYFLY_QEMU_GUEST_REVISION" >"$MAYFLY_QEMU_GUEST/revision"
  fi
}

if ! (flock 9 && prepare_qemu) 9>"$MAYFLY_CACHE/.lock"; then
  say "the qemu backend tests will fail: no QEMU or no test guest"
fi
