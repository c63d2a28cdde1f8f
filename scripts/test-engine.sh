# Sourced by scripts/test-prerequisites.sh (which starts the test Docker
# engine and caches a Debian root filesystem) and scripts/build-image.sh
# (which builds the container image on that engine from that cache): where
# the two find the engine and the cache. test/helpers/docker.ts names the
# same socket.
MAYFLY_DOCKER_SOCKET=/run/mayfly-test-docker.sock
MAYFLY_CACHE=/var/cache/mayfly-test
# debootstrap's bookworm minbase with openssh-server, iproute2 and procps: the docker
# backend's job image, and the container image's base (scripts/build-image.sh).
MAYFLY_ROOTFS_TAR=$MAYFLY_CACHE/debootstrap-bookworm-minbase-sshd.tar

mdocker() { docker -H "unix://$MAYFLY_DOCKER_SOCKET" "$@"; }
docker_up() { [ -S "$MAYFLY_DOCKER_SOCKET" ] && mdocker version >/dev/null 2>&1; }
