#!/bin/sh
# Inside a VM of the kernel matrix or of the booted lab, as root, no network: what
# every job needs before it runs pktfate. Loopback up, tracefs mounted, and
# pktfate installed from the shared source (/mnt/src) into the image's baked
# virtualenv: a copy without the host's virtualenv and git objects, then pktfate
# alone (its dependencies are in the image).
set -e
ip link set lo up
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing
mkdir -p /root/pktfate
tar -C /mnt/src --exclude=./.venv --exclude=./.git -cf - . | tar -C /root/pktfate -xf -
/opt/pktfate/bin/pip install -q --no-deps --no-build-isolation --no-index /root/pktfate
ln -sfn /opt/pktfate/bin/pktfate /usr/local/bin/pktfate
