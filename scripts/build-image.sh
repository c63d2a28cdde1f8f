#!/usr/bin/env bash
# Builds the container image from the Dockerfile, unchanged, on the test
# Docker engine (scripts/test-prerequisites.sh starts it; run that first),
# and tags it mayfly:test for test/integration/image.test.ts. Prints the
# image's size.
#
# No registry serves base images here, so the base the Dockerfile's
# NODE_IMAGE names is made on this machine: the Debian root filesystem the
# docker tests already cache, plus Node 24 (scripts/node24.sh) and the
# machine's npm, imported into the engine. It is rebuilt only when one of
# those changes; the Dockerfile's own layers come from the engine's cache
# when their inputs did not change.
#
# The Dockerfile runs `npm ci` and `apt-get install` as a real user's build
# does, against the registries. The test engine gives containers no bridge
# (it leaves the host's networking alone), so the build's steps use the
# host's network (`--network host`): the Dockerfile stays what an operator
# builds, and nothing built outside the image gets into it.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/test-engine.sh
. scripts/test-engine.sh

IMAGE=mayfly:test
# Bump when make_base changes: the base is made again.
BASE_REVISION=1
say() { echo "build-image.sh: $*" >&2; }

docker_up || { say "no test Docker engine on $MAYFLY_DOCKER_SOCKET: run scripts/test-prerequisites.sh (as root) first"; exit 1; }
[ -s "$MAYFLY_ROOTFS_TAR" ] || { say "no cached root filesystem at $MAYFLY_ROOTFS_TAR: run scripts/test-prerequisites.sh (as root) first"; exit 1; }

node_bin=$(bash scripts/node24.sh)
node_version=$("$node_bin/node" --version)
# The npm the machine runs (scripts/node24.sh runs it under Node 24 too), set
# to reach the registry the way the machine's does: the same registry, and
# the same certificate authorities when the machine names a file of its own.
npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
npm_version=$(npm --version)
npm_registry=$(npm config get registry)
npm_cafile=$(npm config get cafile)
[ "$npm_cafile" = null ] && npm_cafile=
# What the base is made of: a change to any of them makes a new one.
base_key="revision $BASE_REVISION, rootfs $(stat -c '%s %Y' "$MAYFLY_ROOTFS_TAR"), node $node_version, npm $npm_version, $npm_registry${npm_cafile:+, cafile $(stat -c '%s %Y' "$npm_cafile")}"
base=mayfly-base:node-${node_version#v}

make_base() {
  local dir
  dir=$(mktemp -d /var/tmp/mayfly-base.XXXXXX)
  trap 'rm -rf "$dir"' RETURN
  tar -C "$dir" -xf "$MAYFLY_ROOTFS_TAR"
  # The cached root filesystem has sshd for the job image; its host keys have no place in a base.
  rm -f "$dir"/etc/ssh/ssh_host_*
  # apt keeps no package caches, as in Debian's official images (which the node images build on):
  # without this an `apt-get install` layer carries tens of MB of index caches.
  cat >"$dir/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
  rm -rf "$dir"/var/cache/apt/*.bin "$dir"/var/lib/apt/lists/*
  install -D -m 0755 "$node_bin/node" "$dir/usr/local/bin/node"
  mkdir -p "$dir/usr/local/lib/node_modules"
  cp -a "$npm_dir" "$dir/usr/local/lib/node_modules/npm"
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$dir/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$dir/usr/local/bin/npx"
  # npm's global settings (its prefix is /usr/local): for the build's `npm ci` only, not for mayfly.
  mkdir -p "$dir/usr/local/etc"
  echo "registry=$npm_registry" >"$dir/usr/local/etc/npmrc"
  if [ -n "$npm_cafile" ]; then
    install -D -m 0644 "$npm_cafile" "$dir/usr/local/etc/npm-ca.crt"
    echo "cafile=/usr/local/etc/npm-ca.crt" >>"$dir/usr/local/etc/npmrc"
  fi
  tar -C "$dir" -c . | mdocker import \
    --change "LABEL mayfly.base=\"$base_key\"" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["node"]' - "$base" >/dev/null
}

if [ "$(mdocker image inspect --format '{{index .Config.Labels "mayfly.base"}}' "$base" 2>/dev/null)" != "$base_key" ]; then
  say "making the base image $base ($base_key)"
  make_base
fi

started=$(date +%s)
# The engine is older than BuildKit's client here: the classic builder builds the same Dockerfile
# (--force-rm: a failed step's container goes too).
DOCKER_BUILDKIT=0 mdocker build --quiet --force-rm --network host --label mayfly.build-image=1 \
  --build-arg "NODE_IMAGE=$base" --tag "$IMAGE" . >/dev/null
# The image this one replaced, now untagged (the label marks only final images: the stages' cache stays).
mdocker image prune --force --filter label=mayfly.build-image=1 >/dev/null
size=$(mdocker image inspect --format '{{.Size}}' "$IMAGE")
say "built $IMAGE on $base in $(($(date +%s) - started)) s: $((size / 1000000)) MB"
