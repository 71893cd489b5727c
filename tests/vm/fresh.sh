#!/bin/sh
# make fresh-test: the README's two commands on a fresh Debian 12 machine, with
# nothing installed by hand. The machine is a qemu guest (software emulation) made
# from Debian's packages alone: debootstrap's minimal bookworm, its kernel, systemd
# and DHCP on eth0; none of the packages the kernel matrix's image bakes in. The
# guest reaches Debian's archive and PyPI through qemu's user-mode network, as a
# fresh server would. In it, fresh-job.sh runs, from a clean clone of this
# checkout's HEAD:
#     sh scripts/setup.sh && make demo
#     sh scripts/setup.sh --dev && make unit && pytest tests/integration/test_lifecycle.py
# (the README's second command runs make test; its kernel matrix would boot qemu
# inside this emulated guest, hours here, so the guest runs the unit suite and the
# lifecycle tests instead). Prints the guest's transcript with each step's time;
# exit 0 when every step passed. The base image is cached under $PKTFATE_VM_CACHE,
# keyed by this script's content.
# usage: fresh.sh [TRANSCRIPT]
set -eu

here=$(cd "$(dirname "$0")" && pwd)
project=$(cd "$here/../.." && pwd)
cache=${PKTFATE_VM_CACHE:-/var/cache/pktfate/vm}
key=$(cat "$here/fresh.sh" "$here/vmjob.service" | sha256sum | cut -c1-12)
out=$cache/fresh-$key
transcript=${1:-}
log() { printf 'fresh: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
	echo "fresh: run as root (debootstrap, qemu)" >&2
	exit 2
fi
for tool in debootstrap qemu-system-x86_64 mkfs.ext4 git; do
	command -v "$tool" >/dev/null || { echo "fresh: $tool is missing: run make setup-dev" >&2; exit 2; }
done

build_image() {
	mirror=$(sh "$here/mirror.sh")
	root=$out/rootfs
	rm -rf "$out"
	mkdir -p "$out/boot"
	log "debootstrap bookworm from $mirror, with Debian's kernel (a few minutes)"
	debootstrap --variant=minbase --include=systemd-sysv,udev,kmod,initramfs-tools,linux-image-amd64 \
		bookworm "$root" "$mirror" >"$out/debootstrap.log"
	security=$(echo "$mirror" | sed 's#/debian$#/debian-security#')
	printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s bookworm-security main\n' \
		"$mirror" "$mirror" "$security" >"$root/etc/apt/sources.list"
	# What an installer leaves: a host name, a root disk, DHCP on the first NIC and
	# a resolver (qemu's user-mode network answers DNS at 10.0.2.3).
	echo pktfate-fresh >"$root/etc/hostname"
	printf '127.0.0.1 localhost pktfate-fresh\n' >"$root/etc/hosts"
	printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' >"$root/etc/fstab"
	printf '[Match]\nName=eth0\n\n[Network]\nDHCP=yes\n' >"$root/etc/systemd/network/eth0.network"
	ln -sf /lib/systemd/system/systemd-networkd.service \
		"$root/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
	printf 'nameserver 10.0.2.3\n' >"$root/etc/resolv.conf"
	# The network's own certificate authorities, where the host has any (a network
	# whose egress inspects TLS, as here, signs with its own): a machine on that
	# network has them, as this host does; ca-certificates, once set-up installs it,
	# trusts them. Nothing else of the host's goes into the guest.
	mkdir -p "$root/usr/local/share/ca-certificates"
	for cert in /usr/local/share/ca-certificates/*.crt; do
		[ -f "$cert" ] && cp "$cert" "$root/usr/local/share/ca-certificates/"
	done
	# The harness: run the job from the 9p share, then power off.
	cp "$here/vmjob.service" "$root/etc/systemd/system/vmjob.service"
	ln -sf /etc/systemd/system/vmjob.service "$root/etc/systemd/system/multi-user.target.wants/vmjob.service"
	ln -sf /dev/null "$root/etc/systemd/system/serial-getty@ttyS0.service"
	cp "$root"/boot/vmlinuz-* "$out/boot/vmlinuz"
	cp "$root"/boot/initrd.img-* "$out/boot/initrd.img"
	log "packing the ext4 image"
	truncate -s 16G "$out/disk.img"
	mkfs.ext4 -q -F -d "$root" "$out/disk.img"
	rm -rf "$root"
	touch "$out/done"
}

[ -f "$out/done" ] || build_image

job=$(mktemp -d /tmp/pktfate-fresh-XXXXXX)
cleanup() { rm -rf "$job"; }
trap cleanup EXIT
git clone -q "$project" "$job/src"
git -C "$job/src" log -1 --format='%h %s' | cut -c1-90 >"$job/commit"
cp "$here/fresh-job.sh" "$job/job.sh"
log "booting the fresh guest (its transcript follows when it powers off; about an hour)"
start=$(date +%s)
timeout "${VM_TIMEOUT:-10800}" qemu-system-x86_64 -accel tcg,thread=multi -machine q35 \
	-cpu max -m "${VM_MEMORY:-4096}" -smp 2 \
	-kernel "$out/boot/vmlinuz" -initrd "$out/boot/initrd.img" \
	-append "root=/dev/vda rw console=ttyS0 quiet systemd.show_status=0 net.ifnames=0 panic=-1" \
	-drive file="$out/disk.img",format=raw,if=virtio,cache=unsafe -snapshot \
	-nic user,model=virtio-net-pci \
	-virtfs local,path="$job",mount_tag=job,security_model=none,id=job \
	-virtfs local,path="$job",mount_tag=src,security_model=none,readonly=on,id=src \
	-display none -monitor none -serial file:"$job/serial.log" -no-reboot || true
log "the guest ran for $(( $(date +%s) - start )) s"
if [ -f "$job/transcript.txt" ]; then
	cat "$job/transcript.txt"
	[ -z "$transcript" ] || cp "$job/transcript.txt" "$transcript"
else
	log "no transcript: the guest's console follows"
	tail -n 40 "$job/serial.log"
fi
[ -f "$job/passed" ]
