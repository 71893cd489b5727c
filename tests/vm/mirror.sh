#!/bin/sh
# Print a Debian archive this machine can reach, for the images of tests/vm/.
# Tried in order: $PKTFATE_DEBIAN_MIRROR, the mirror this host's apt uses when that
# mirror serves Debian's bookworm (not so on Ubuntu, whose archive has no
# bookworm), then deb.debian.org. Each is asked for bookworm's Release file.
# usage: mirror.sh        prints the mirror, or says on stderr why none; exit 2
set -eu

host_mirror() {
	awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true
	awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true
}

for mirror in ${PKTFATE_DEBIAN_MIRROR:-} $(host_mirror) http://deb.debian.org/debian; do
	mirror=${mirror%/}
	if curl -fsS -o /dev/null -m 20 "$mirror/dists/bookworm/Release" 2>/dev/null; then
		echo "$mirror"
		exit 0
	fi
	echo "mirror.sh: $mirror has no bookworm release, or cannot be reached" >&2
done
echo "mirror.sh: no Debian mirror reachable: set PKTFATE_DEBIAN_MIRROR" >&2
exit 2
