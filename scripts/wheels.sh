#!/bin/sh
# Fetch pktfate's Python dependencies (pyproject.toml's `dependencies`) and any
# further requirements as wheels into DIR, for Debian 12's Python (3.11) whatever
# Python this host runs: what an image or a box built from Debian's packages then
# installs with no network (deploy/build-image.sh, vagrant/build-box.sh).
# usage: scripts/wheels.sh DIR [REQUIREMENT...]
set -eu

dir=${1:?usage: wheels.sh DIR [REQUIREMENT...]}
shift
project=$(cd "$(dirname "$0")/.." && pwd)
deps=$(python3 -c 'import re,sys; t=open(sys.argv[1]).read(); print(" ".join(re.findall(r"\"([^\"]+)\"", re.search(r"^dependencies = \[(.*?)\]", t, re.M | re.S).group(1))))' "$project/pyproject.toml")
arch=$(uname -m)
mkdir -p "$dir"
# shellcheck disable=SC2086 # one word per requirement
python3 -m pip download -q -d "$dir" --only-binary=:all: --python-version 3.11 \
	--implementation cp --abi cp311 --abi abi3 --abi none \
	--platform "manylinux2014_$arch" --platform "manylinux_2_17_$arch" --platform any \
	"$@" $deps
