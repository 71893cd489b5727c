#!/bin/sh
# Build pktfate's image here with buildah, from Debian's packages alone: a base
# made with debootstrap (bookworm, with the distro's bcc and the tools a watch
# reads the host with), imported as localhost/pktfate-base:bookworm once, and the
# Python dependencies' wheels fetched by the host's pip. No registry is asked.
# usage: deploy/build-image.sh [TAG]     (default localhost/pktfate:VERSION)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
project=$(cd "$here/.." && pwd)
version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$project/tracer/__init__.py")
tag=${1:-localhost/pktfate:$version}
base=localhost/pktfate-base:bookworm
log() { printf 'build-image: %s\n' "$*" >&2; }
for tool in buildah podman debootstrap; do
	command -v "$tool" >/dev/null || { echo "build-image: $tool is missing: run make setup-dev" >&2; exit 2; }
done

if ! podman image exists "$base"; then
	root=$(mktemp -d /var/tmp/pktfate-base.XXXXXX)
	trap 'rm -rf "$root"' EXIT
	mirror=$(sh "$project/tests/vm/mirror.sh")
	log "debootstrap bookworm from $mirror into $root (a few minutes)"
	debootstrap --variant=minbase \
		--include=python3-bpfcc,python3-venv,python3-pip,python3-setuptools,iproute2,iptables,nftables,ipset,ethtool,ca-certificates \
		bookworm "$root" "$mirror" >"$root.log" 2>&1 || { tail -5 "$root.log" >&2; exit 1; }
	rm -f "$root.log"
	chroot "$root" apt-get clean
	rm -rf "$root/var/lib/apt/lists/"*
	tar -C "$root" -c . | podman import --change 'CMD ["/bin/bash"]' - "$base" >/dev/null
	log "imported $base"
fi

# The dependencies' wheels, for the base's Python (scripts/wheels.sh).
wheels=$project/build/image-wheels
rm -rf "$wheels"
sh "$project/scripts/wheels.sh" "$wheels" "setuptools>=77"
log "building $tag from $base"
buildah bud --layers=false --isolation chroot --build-arg "BASE=$base" \
	-f "$here/Containerfile" -t "$tag" "$project" >&2
echo "$tag"
