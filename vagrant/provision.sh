#!/bin/sh
# Provision one machine of the pktfate lab, as root: install pktfate with the
# README's set-up script, then record the machine's lab role (from the addresses
# it holds), its routes and its baseline, which `pktfate lab reset` returns to.
#
# Usage: provision.sh client|router|server
# Environment:
#   PKTFATE_ROUTER_MODE  kernel (default) or userspace
#   PKTFATE_SOURCE       the synced project (default /vagrant)
#   PKTFATE_SKIP_SETUP   1: pktfate is installed already (the tests' stand-ins)
set -eu

role=${1:-}
case "$role" in
client | router | server) ;;
*)
	echo "usage: provision.sh client|router|server" >&2
	exit 2
	;;
esac
source_dir=${PKTFATE_SOURCE:-/vagrant}
install_dir=/opt/pktfate

if [ "${PKTFATE_SKIP_SETUP:-0}" != 1 ]; then
	# A copy of its own: the synced folder is shared, and a virtualenv is not.
	mkdir -p "$install_dir"
	tar -C "$source_dir" --exclude=./.venv --exclude=./.git -cf - . | tar -C "$install_dir" -xf -
	sh "$install_dir/scripts/setup.sh"
fi

pktfate lab provision --expect-role "$role" --router-mode "${PKTFATE_ROUTER_MODE:-kernel}"
