#!/bin/sh
# Build the lab's Vagrant box here, from Debian's packages alone (no box can be
# downloaded here): Debian 12 made with debootstrap, with everything the README's
# set-up would download already in it (the distro's bcc, the kernel's headers,
# the lab's tools, pktfate's Python dependencies as wheels), the vagrant user and
# Vagrant's insecure key as boxes have them, packed as a libvirt box (box.img in
# qcow2, metadata.json, its Vagrantfile) and added with `vagrant box add`.
#
# The box boots its kernel directly (libvirt's <kernel>/<initrd>, no boot
# loader): the kernel and initrd are kept in /var/lib/libvirt/boot/NAME/, where
# libvirt's qemu can read them, and the box's own Vagrantfile points there.
#
# usage: vagrant/build-box.sh [NAME]    (default pktfate/bookworm-local)
# Prints the box's name. A box of that name built from this same script is kept.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
project=$(cd "$here/.." && pwd)
name=${1:-pktfate/bookworm-local}
log() { printf 'build-box: %s\n' "$*" >&2; }
for tool in debootstrap qemu-img vagrant mkfs.ext4; do
	command -v "$tool" >/dev/null || { echo "build-box: $tool is missing: run make setup-dev" >&2; exit 2; }
done

# Keyed by these scripts and pktfate's dependencies: a box built from them is reused.
key=$( (cat "$here/build-box.sh" "$project/scripts/wheels.sh"; grep -E '^dependencies = ' "$project/pyproject.toml") |
	sha256sum | cut -c1-12)
safe=$(echo "$name" | tr '/' '-')
boot=/var/lib/libvirt/boot/$safe
if vagrant box list 2>/dev/null | grep -q "^$name " && [ -f "$boot/key" ] &&
	[ "$(cat "$boot/key")" = "$key" ]; then
	log "$name is built from this script already"
	echo "$name"
	exit 0
fi

work=$(mktemp -d /var/tmp/pktfate-box.XXXXXX)
root=$work/rootfs
unmount() { for d in dev sys proc; do umount "$root/$d" 2>/dev/null || true; done; }
cleanup() { unmount; rm -rf "$work"; }
trap cleanup EXIT

mirror=$(sh "$project/tests/vm/mirror.sh")
security=$(echo "$mirror" | sed 's#/debian/*$#/debian-security#')
log "debootstrap bookworm from $mirror (a few minutes)"
debootstrap --variant=minbase --include=systemd-sysv,udev,kmod,ifupdown,isc-dhcp-client \
	bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
	{ tail -5 "$work/debootstrap.log" >&2; exit 1; }
printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s bookworm-security main\n' \
	"$mirror" "$mirror" "$security" >"$root/etc/apt/sources.list"
for d in proc sys dev; do mount --bind "/$d" "$root/$d"; done

# What scripts/setup.sh installs (it then finds them and downloads nothing), the
# kernel and its headers, and what a Vagrant box needs (ssh, sudo, rsync for the
# synced folder, ifupdown for the private networks Vagrant configures).
setup_packages=$(sh "$project/scripts/setup.sh" --packages)
packages="$setup_packages linux-image-amd64 linux-headers-amd64 initramfs-tools \
openssh-server sudo rsync ca-certificates"
log "installing the kernel, the lab's tools and the distro's bcc"
chroot "$root" apt-get update -qq
# shellcheck disable=SC2086 # one word per package
DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq --no-install-recommends \
	$packages >"$work/apt.log" 2>&1 || { tail -5 "$work/apt.log" >&2; exit 1; }
chroot "$root" apt-get clean

# pktfate's Python dependencies as wheels (bookworm's Python is 3.11), and pip
# told to take them from there: provisioning then needs no network.
wheels=$root/var/cache/pktfate/wheels
sh "$project/scripts/wheels.sh" "$wheels" pip "setuptools>=77"
printf '[global]\nno-index = true\nfind-links = /var/cache/pktfate/wheels\n' >"$root/etc/pip.conf"

# The vagrant user, as every box has it: password vagrant, sudo without one,
# Vagrant's insecure key (Vagrant replaces it with the machine's own at first up).
chroot "$root" useradd -m -s /bin/bash vagrant
echo 'vagrant:vagrant' | chroot "$root" chpasswd
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' >"$root/etc/sudoers.d/vagrant"
chmod 440 "$root/etc/sudoers.d/vagrant"
insecure=$(find /usr/share /usr/lib /opt -path '*vagrant*/keys/vagrant.pub' 2>/dev/null | head -1)
[ -n "$insecure" ] || { echo "build-box: Vagrant's insecure key (keys/vagrant.pub) not found" >&2; exit 2; }
mkdir -p "$root/home/vagrant/.ssh"
cp "$insecure" "$root/home/vagrant/.ssh/authorized_keys"
chroot "$root" chown -R vagrant:vagrant /home/vagrant/.ssh
chmod 700 "$root/home/vagrant/.ssh"
chmod 600 "$root/home/vagrant/.ssh/authorized_keys"
# The first NIC (Vagrant's management network) by DHCP; the lab's NICs are
# Vagrant's to configure. Classic names: eth0, eth1, as the lab's scripts expect.
printf 'auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n' \
	>"$root/etc/network/interfaces"
echo pktfate-box >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 pktfate-box\n' >"$root/etc/hosts"
printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' >"$root/etc/fstab"
# sshd's host keys are made at first boot, each VM its own.
rm -f "$root"/etc/ssh/ssh_host_*
cat >"$root/etc/systemd/system/ssh-host-keys.service" <<'UNIT'
[Unit]
Description=Make this machine's SSH host keys
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/ssh-host-keys.service \
	"$root/etc/systemd/system/multi-user.target.wants/ssh-host-keys.service"
echo 'UseDNS no' >"$root/etc/ssh/sshd_config.d/vagrant.conf"

mkdir -p "$work/box"
cp "$root"/boot/vmlinuz-* "$work/box/vmlinuz"
cp "$root"/boot/initrd.img-* "$work/box/initrd.img"
unmount
log "packing the disk (ext4, 8 GB sparse, qcow2)"
truncate -s 8G "$work/disk.raw"
mkfs.ext4 -q -F -d "$root" "$work/disk.raw"
qemu-img convert -O qcow2 "$work/disk.raw" "$work/box/box.img"
rm -f "$work/disk.raw"

mkdir -p "$boot"
cp "$work/box/vmlinuz" "$work/box/initrd.img" "$boot/"
chmod 755 "$boot"
chmod 644 "$boot/vmlinuz" "$boot/initrd.img"
printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": 8}\n' >"$work/box/metadata.json"
cat >"$work/box/Vagrantfile" <<BOXFILE
# The box's own settings (vagrant/build-box.sh): its kernel is booted directly.
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |lv|
    lv.kernel = "$boot/vmlinuz"
    lv.initrd = "$boot/initrd.img"
    lv.cmd_line = "root=/dev/vda rw console=ttyS0 net.ifnames=0 biosdevname=0"
  end
end
BOXFILE
rm -f "$work/box/vmlinuz" "$work/box/initrd.img"
log "adding the box as $name"
tar -C "$work/box" -czf "$work/pktfate.box" metadata.json box.img Vagrantfile
vagrant box add --force --name "$name" "$work/pktfate.box" >&2
echo "$key" >"$boot/key"
echo "$name"
