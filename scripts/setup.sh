#!/bin/sh
# Set up everything pktfate needs on Debian or Ubuntu, as root: the distro's bcc,
# kernel headers for bcc's compiler, the network tools the lab and the tests
# drive, tracefs, and a virtualenv that sees the distro's bcc. Safe to rerun.
# With --dev, also what the tests and the bench need besides: vagrant,
# vagrant-libvirt and libvirt (the lab's Vagrantfile, booted by make vagrant-test), qemu and debootstrap (the kernel matrix,
# tests/vm/), tshark and chromium (the pcapng file and the HTML report opened as
# people open them) and the tools the bench compares pktfate with (bcc's tcpdrop,
# bpftrace, dropwatch).
set -eu

dev=0 list=0
case "${1:-}" in
--dev) dev=1 ;;
--packages) list=1 ;; # print the distro packages it installs, then stop (vagrant/build-box.sh)
esac

project_dir=$(cd "$(dirname "$0")/.." && pwd)
venv="$project_dir/.venv"
kernel=$(uname -r)

log() { printf 'setup: %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
	echo "setup: run as root (sudo make setup)" >&2
	exit 2
fi

# A fresh cloud machine may be running its daily apt job: wait for its lock.
apt_install() {
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y \
		--no-install-recommends "$@"
}

# procps: sysctl, which every lab build uses. Nothing is assumed present: a
# minimal Debian has none of these.
packages="python3-bpfcc python3-venv python3-pip iproute2 iptables nftables ipset ethtool \
curl ca-certificates netcat-openbsd iputils-ping tcpdump hping3 traceroute procps make gcc \
libc6-dev git shellcheck"
if [ "$dev" = 1 ]; then
	packages="$packages vagrant vagrant-libvirt bpfcc-tools bpftrace dropwatch \
qemu-system-x86 qemu-utils debootstrap e2fsprogs debian-archive-keyring tshark chromium \
prometheus podman buildah runc \
libvirt-daemon-system libvirt-clients dnsmasq-base rsync"
fi
if [ "$list" = 1 ]; then
	echo "$packages"
	exit 0
fi
# Only when something is missing: a rerun needs no package index.
missing=""
for package in $packages; do
	if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'ok installed'; then
		missing="$missing $package"
	fi
done
if [ -n "$missing" ]; then
	log "installing distro packages:$missing"
	apt-get -o DPkg::Lock::Timeout=600 update -qq
	# shellcheck disable=SC2086 # one word per package
	apt_install $missing >/dev/null
fi

# bcc compiles against a kernel header tree. Use the distro's matching headers
# where they exist; otherwise the newest header package the distro has. pktfate
# never relies on those headers' struct layouts (offsets come from BTF), bcc only
# needs them for its own prelude.
if [ ! -e "/lib/modules/$kernel/build/include" ]; then
	if apt-cache show "linux-headers-$kernel" >/dev/null 2>&1; then
		log "installing linux-headers-$kernel"
		apt_install "linux-headers-$kernel" >/dev/null
	else
		arch=$(dpkg --print-architecture)
		fallback=$(apt-cache search --names-only "^linux-headers-[0-9]+\.[0-9]+-$arch\$" |
			awk '{print $1}' | sort -V | tail -n 1)
		fallback=${fallback:-linux-headers-$arch}
		log "no headers for $kernel in the distro: using $fallback"
		apt_install "$fallback" >/dev/null
		arch_dir=$(printf '%s\n' /usr/src/linux-headers-*-"$arch" | sort -V | tail -n 1)
		common_dir=$(printf '%s\n' /usr/src/linux-headers-*-common | sort -V | tail -n 1)
		mkdir -p "/lib/modules/$kernel"
		ln -sfn "$arch_dir" "/lib/modules/$kernel/build"
		ln -sfn "$common_dir" "/lib/modules/$kernel/source"
	fi
fi

if [ ! -d /sys/kernel/tracing/events ]; then
	log "mounting tracefs on /sys/kernel/tracing"
	mount -t tracefs tracefs /sys/kernel/tracing
fi

# The distro's bcc lives in /usr/bin/python3's dist-packages, not on PyPI:
# the virtualenv must be made from that interpreter and see its site packages.
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import bcc' 2>/dev/null; then
	log "creating $venv"
	rm -rf "$venv"
	/usr/bin/python3 -m venv --system-site-packages "$venv"
fi
log "installing pktfate into $venv"
"$venv/bin/pip" install -q --upgrade pip >/dev/null
# The tests' and linters' Python packages with --dev only: a server running
# pktfate needs none of them (and the lab's VMs install offline, from their box).
extras=""
if [ "$dev" = 1 ]; then
	extras="[dev]"
fi
"$venv/bin/pip" install -q -e "${project_dir}${extras}"
ln -sfn "$venv/bin/pktfate" /usr/local/bin/pktfate
log "done: $(/usr/local/bin/pktfate --version)"
