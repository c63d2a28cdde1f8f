#!/usr/bin/env bash
# Builds the small guest the qemu backend's tests boot, once, into $1 (a
# cache directory): a golden qcow2 image made from the docker test image's
# cached debootstrap tree (no second debootstrap), and Debian's cloud kernel
# with a tiny initramfs for direct-kernel boot (TRAVIS_WORKER_QEMU_KERNEL).
#
# The guest's init is a shell script, not systemd: a full boot under TCG
# (no KVM on CI) takes far longer than the tests can afford. It does what
# cloud-init does for a stock image, reading the NoCloud seed (the volume
# labelled CIDATA): the job's key for `travis`, the host name, the
# auto-implode power-off; then runs sshd as PID 1.
#
# Usage: qemu-test-guest.sh CACHE_DIR ROOTFS_TAR   (as root: chroot, useradd)
set -euo pipefail

cache=$1
rootfs_tar=$2
work=$(mktemp -d /var/tmp/mayfly-qemu-guest.XXXXXX)
trap 'rm -rf "$work"' EXIT

# The kernel and busybox come from Debian's archive as packages, unpacked, never installed.
(cd "$work" && apt-get download -qq linux-image-cloud-amd64 busybox-static >/dev/null 2>&1)
kernel_pkg=$(dpkg-deb -f "$work"/linux-image-cloud-amd64_*.deb Depends | sed 's/[ ,(].*//')
(cd "$work" && apt-get download -qq "$kernel_pkg" >/dev/null 2>&1)
mkdir "$work/kernel" "$work/busybox"
dpkg-deb -x "$work/$kernel_pkg"_*.deb "$work/kernel"
dpkg-deb -x "$work"/busybox-static_*.deb "$work/busybox"
release=${kernel_pkg#linux-image-}
moddir="$work/kernel/lib/modules/$release"
# The package leaves modules.dep to its install step.
depmod -b "$work/kernel" "$release"

# --- initramfs: load the drivers the cloud kernel builds as modules, mount the root, switch to it.
initrd="$work/initrd"
mkdir -p "$initrd"/{bin,dev,proc,sys,newroot,modules}
cp "$work/busybox/bin/busybox" "$initrd/bin/busybox"
# virtio disk and network, and the seed's vfat; each after what it depends on (modules.dep order).
wanted="virtio_pci virtio_blk virtio_net vfat nls_cp437 nls_ascii"
order=()
add_module() {
  local path deps dep
  path=$(grep -E "(^|/)$1\.ko(\.xz)?:" "$moddir/modules.dep" | head -1) || { echo "no module $1 in $kernel_pkg" >&2; exit 1; }
  deps=${path#*:}
  path=${path%%:*}
  for dep in $deps; do add_module "$(basename "${dep%%.ko*}")"; done
  for dep in "${order[@]}"; do [ "$dep" = "$path" ] && return 0; done
  order+=("$path")
}
for module in $wanted; do add_module "$module"; done
: >"$initrd/modules/order"
for path in "${order[@]}"; do
  name=$(basename "$path")
  if [[ $name == *.xz ]]; then xz -dc "$moddir/$path" >"$initrd/modules/${name%.xz}"; name=${name%.xz}; else cp "$moddir/$path" "$initrd/modules/$name"; fi
  echo "$name" >>"$initrd/modules/order"
done
cat >"$initrd/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r module; do insmod "/modules/$module"; done </modules/order
while [ ! -b /dev/vda ]; do sleep 0.05; done
mount -o rw /dev/vda /newroot || { echo "mayfly-test initramfs: cannot mount /dev/vda"; poweroff -f; }
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/mayfly-test-init
INIT
chmod 0755 "$initrd/init"
(cd "$initrd" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initrd.img"

# --- root filesystem: the cached debootstrap tree, a `travis` user, host keys made now, the init.
root="$work/root"
mkdir "$root"
tar -C "$root" -xf "$rootfs_tar"
chroot "$root" useradd --create-home --shell /bin/bash travis
chroot "$root" usermod -p '*' travis
chroot "$root" ssh-keygen -A >/dev/null
cat >"$root/etc/ssh/sshd_config.d/mayfly-test.conf" <<'CONF'
# No PAM session (nothing of systemd/logind runs in this guest); keys only.
UsePAM no
PasswordAuthentication no
CONF
cat >"$root/sbin/mayfly-test-init" <<'INIT'
#!/bin/sh
# The test guest's init: what cloud-init does with a NoCloud seed, in a few lines.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/seed /run/sshd
seed=$(blkid -L CIDATA || blkid -L cidata)
mount -r "$seed" /run/seed
hostname "$(sed -n 's/^local-hostname: *//p' /run/seed/meta-data)"
install -d -m 700 -o travis -g travis /home/travis/.ssh
grep -o 'ssh-ed25519 [A-Za-z0-9+/=]*' /run/seed/user-data >/home/travis/.ssh/authorized_keys
chown travis: /home/travis/.ssh/authorized_keys
# cloud-init's power_state: power off after the lease, whatever the worker does.
minutes=$(sed -n 's/^ *delay: *"*+\([0-9]*\).*/\1/p' /run/seed/user-data)
[ -n "$minutes" ] && (sleep $((minutes * 60)); echo o >/proc/sysrq-trigger) &
ip link set lo up
ip addr add 10.0.2.15/24 dev eth0
ip link set eth0 up
ip route add default via 10.0.2.2
# sshd as PID 1: when it ends, the kernel panics and QEMU (-no-reboot) exits.
exec /usr/sbin/sshd -D -e
INIT
chmod 0755 "$root/sbin/mayfly-test-init"
mkfs.ext4 -q -L mayfly-test -d "$root" "$work/root.img" 1G
qemu-img convert -O qcow2 "$work/root.img" "$work/golden.qcow2"

mkdir -p "$cache"
cp "$work/kernel/boot/vmlinuz-$release" "$cache/vmlinuz.tmp" && mv "$cache/vmlinuz.tmp" "$cache/vmlinuz"
mv "$work/initrd.img" "$cache/initrd.img"
mv "$work/golden.qcow2" "$cache/golden.qcow2"
