#!/bin/sh
# Inside fresh.sh's guest, as root, on a fresh Debian 12 with network: the
# README's commands from a clean clone, each step timed, into the transcript.
# `passed` marks that every step passed.
job=/mnt/job
out=$job/transcript.txt
exec >"$job/guest.log" 2>&1
cp -a "$job/src" /root/pktfate
cd /root/pktfate || exit 1

step() {
	printf '\n# %s\n$ %s\n' "$(date -u +%H:%M:%S)" "$*" >>"$out"
	start=$(date +%s)
	sh -c "$*" >>"$out" 2>&1
	status=$?
	printf '# exit %s after %s s\n' "$status" "$(( $(date +%s) - start ))" >>"$out"
	return "$status"
}

{
	# shellcheck disable=SC1091 # the guest's own file
	echo "fresh Debian guest: $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r)"
	echo "checkout: $(cat "$job/commit")"
	echo "packages before set-up: $(dpkg-query -W | wc -l)"
} >"$out"
step 'sh scripts/setup.sh && make demo' &&
	step 'sh scripts/setup.sh --dev && make unit' &&
	step '.venv/bin/python -m pytest -q -rs tests/integration/test_lifecycle.py' &&
	touch "$job/passed"
printf '\n# packages after set-up: %s\n' "$(dpkg-query -W | wc -l)" >>"$out"
