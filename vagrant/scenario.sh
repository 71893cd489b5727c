#!/bin/sh
# Apply a pktfate lab scenario to the three VMs, each its own part (router, then
# server, then client), or take them back to their provisioned state.
#
# Usage (from vagrant/, on the host):
#   ./scenario.sh NAME      e.g. ./scenario.sh checksum
#   ./scenario.sh reset
# `pktfate lab list` (on any machine) lists the scenarios.
# Environment:
#   PKTFATE_STANDIN=PREFIX  run in the namespaces PREFIX-router, PREFIX-server and
#                           PREFIX-client of this machine instead of the VMs (the
#                           tests' stand-ins)
#   PKTFATE_ON=COMMAND      run each machine's part as `COMMAND HOST ARGV...` instead
#                           of `vagrant ssh` (tests/vm/lab.py: the lab booted in
#                           qemu VMs)
set -eu

name=${1:-}
if [ -z "$name" ]; then
	echo "usage: scenario.sh SCENARIO|reset" >&2
	exit 2
fi

cd "$(dirname "$0")" # vagrant finds the machines by the Vagrantfile here

on() {
	host=$1
	shift
	if [ -n "${PKTFATE_STANDIN:-}" ]; then
		ip netns exec "$PKTFATE_STANDIN-$host" "$@"
	elif [ -n "${PKTFATE_ON:-}" ]; then
		# shellcheck disable=SC2086 # a command line, split into its words
		$PKTFATE_ON "$host" "$@"
	else
		vagrant ssh "$host" -c "sudo $*"
	fi
}

for host in router server client; do
	if [ "$name" = reset ]; then
		on "$host" pktfate lab reset
	else
		on "$host" pktfate lab apply "$name"
	fi
done
