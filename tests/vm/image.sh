#!/bin/sh
# Build (once) the Debian image the kernel matrix boots: a bookworm root filesystem
# with everything pktfate and its lab need baked in (bcc, the network tools, a
# virtualenv with pktfate's Python dependencies), and three Debian kernels with
# their header trees for bcc: bullseye's 5.10, bookworm's 6.1 and bookworm's 6.12
# (bookworm-security's linux-6.12). The guest has no network: nothing is installed
# at boot. The image is cached under $PKTFATE_VM_CACHE, keyed by this script's
# content; a rerun with the same script does nothing.
#
# usage: image.sh            prints the cache folder (image, kernels) when done
set -eu

here=$(cd "$(dirname "$0")" && pwd)
project=$(cd "$here/../.." && pwd)
cache=${PKTFATE_VM_CACHE:-/var/cache/pktfate/vm}
# Keyed by what goes into the image: this script, the unit, and pktfate's
# dependencies (the lines of pyproject.toml that name them), not the rest of it.
key=$( (cat "$here/image.sh" "$here/vmjob.service"
	grep -E '^(dependencies|dev) = ' "$project/pyproject.toml") | sha256sum | cut -c1-12)
out=$cache/$key
log() { printf 'vm image: %s\n' "$*" >&2; }

if [ -f "$out/done" ]; then
	echo "$out"
	exit 0
fi
for tool in debootstrap qemu-system-x86_64 mkfs.ext4; do
	command -v "$tool" >/dev/null || { echo "vm image: $tool is missing: run make setup-dev" >&2; exit 2; }
done

# A Debian mirror this machine can reach (the host's own when it serves Debian).
mirror=$(sh "$here/mirror.sh")
security=$(echo "$mirror" | sed 's#/debian/*$#/debian-security#')

root=$out/rootfs
# A build killed half-way may have left the host's /proc, /sys or /dev bound into
# the rootfs: removing it then would remove theirs. Unbind first, and refuse if
# anything is still mounted there.
for d in dev sys proc; do umount "$root/$d" 2>/dev/null || true; done
if grep -q " $out/" /proc/mounts; then
	echo "vm image: something is still mounted under $out: unmount it first" >&2
	exit 2
fi
rm -rf "$out"
mkdir -p "$out"
unmount() { for d in dev sys proc; do umount "$root/$d" 2>/dev/null || true; done; }
trap unmount EXIT

log "debootstrap bookworm from $mirror (about 2 minutes)"
debootstrap --variant=minbase --include=systemd-sysv,udev,kmod bookworm "$root" "$mirror" >"$out/debootstrap.log"
printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s bookworm-security main\n' \
	"$mirror" "$mirror" "$security" >"$root/etc/apt/sources.list"
for d in proc sys dev; do mount --bind "/$d" "$root/$d"; done

packages="iproute2 python3 python3-bpfcc python3-pip python3-venv python3-setuptools \
iptables nftables ethtool curl netcat-openbsd iputils-ping tcpdump hping3 traceroute \
procps ca-certificates initramfs-tools gcc libc6-dev \
linux-image-amd64 linux-headers-amd64 linux-image-6.12-amd64 linux-headers-6.12-amd64"
log "installing packages and bookworm's kernels (6.1, 6.12)"
chroot "$root" apt-get update -qq
# shellcheck disable=SC2086 # one word per package
DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq --no-install-recommends \
	$packages >"$out/apt.log"

# bullseye's 5.10: the image installed with dpkg (it builds the initrd), the
# headers only unpacked (their dependencies want bullseye's compiler; bcc needs
# the tree). Unpacked to a scratch folder first: dpkg -x straight into a
# merged-/usr root replaces its /lib link, and the next boot panics.
log "adding bullseye's 5.10 kernel"
apt_dir=$out/apt-bullseye
mkdir -p "$apt_dir/state/lists/partial" "$apt_dir/cache/archives/partial" "$out/debs"
touch "$apt_dir/state/status"
printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s bullseye main\n' \
	"$mirror" >"$apt_dir/sources.list"
apt_bullseye() {
	"$@" -o Dir::State="$apt_dir/state" -o Dir::Cache="$apt_dir/cache" \
		-o Dir::Etc::SourceList="$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null \
		-o Dir::State::status="$apt_dir/state/status" -o APT::Architecture=amd64
}
apt_bullseye apt-get update -qq
kver=$(apt_bullseye apt-cache depends linux-image-amd64 |
	sed -n 's/.*Depends: linux-image-\([0-9].*-amd64\)$/\1/p' | head -n 1)
common=$(echo "$kver" | sed 's/-amd64$/-common/')
(cd "$out/debs" && apt_bullseye apt-get download -qq "linux-image-$kver" \
	"linux-headers-$kver" "linux-headers-$common")
cp "$out/debs/linux-image-$kver"_*.deb "$root/tmp/"
chroot "$root" sh -c 'dpkg -i /tmp/linux-image-*.deb >/dev/null && rm /tmp/linux-image-*.deb'
scratch=$(mktemp -d)
for deb in "$out/debs"/linux-headers-*.deb; do dpkg -x "$deb" "$scratch"; done
cp -a "$scratch/usr/src/." "$root/usr/src/"
for link in build source; do
	ln -sfn "$(readlink "$scratch/lib/modules/$kver/$link")" "$root/usr/lib/modules/$kver/$link"
done
rm -rf "$scratch"
# bcc wants both links on every kernel (Debian's packages make only build).
for dir in "$root"/usr/lib/modules/*; do
	[ -e "$dir/source" ] || ln -sfn "$(readlink "$dir/build" | sed 's/-amd64$/-common/')" "$dir/source"
done

# pktfate's Python dependencies, in a virtualenv that sees the distro's bcc. The
# wheels (and pytest's, for the suite's tests run inside the guests) are fetched by
# the host's pip (its certificates and settings), installed in the chroot from them alone; the guest has no network, so each boot installs
# only pktfate itself from the shared source (--no-deps, no build isolation).
log "baking the virtualenv"
mkdir -p "$root/tmp/src" "$root/tmp/wheels"
cp -a "$project/pyproject.toml" "$project/README.md" "$project/tracer" "$project/bpf" "$root/tmp/src/"
python3 -m pip download -q -d "$root/tmp/wheels" pip "setuptools>=77" "click>=8.0" "pyroute2>=0.7" \
	"Jinja2>=3.0" "prometheus_client>=0.16" "pytest>=7" \
	>"$out/pip.log" 2>&1
chroot "$root" env -u PIP_FIND_LINKS PIP_NO_INDEX=1 PIP_FIND_LINKS=/tmp/wheels sh -c '
	python3 -m venv --system-site-packages /opt/pktfate &&
	/opt/pktfate/bin/pip install -q --upgrade pip setuptools &&
	/opt/pktfate/bin/pip install -q /tmp/src pytest && rm -rf /tmp/src /tmp/wheels' >>"$out/pip.log" 2>&1
chroot "$root" apt-get clean

# Unattended: the guest mounts the shares, runs the job, powers off.
echo pktfate-vm >"$root/etc/hostname"
printf '127.0.0.1 localhost pktfate-vm\n' >"$root/etc/hosts"
printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' >"$root/etc/fstab"
cp "$here/vmjob.service" "$root/etc/systemd/system/vmjob.service"
ln -sf /etc/systemd/system/vmjob.service "$root/etc/systemd/system/multi-user.target.wants/vmjob.service"
ln -sf /dev/null "$root/etc/systemd/system/serial-getty@ttyS0.service"
mkdir -p "$out/boot"
cp "$root"/boot/vmlinuz-* "$root"/boot/initrd.img-* "$out/boot/"
unmount
log "packing the ext4 image"
truncate -s 6G "$out/disk.img"
mkfs.ext4 -q -F -d "$root" "$out/disk.img"
rm -rf "$root" "$apt_dir"
touch "$out/done"
echo "$out"
