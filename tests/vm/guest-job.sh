#!/bin/sh
# Runs inside a kernel-matrix VM (vmjob.service, as root, no network): install
# pktfate from the shared checkout into the image's baked virtualenv, run the
# tests of $PYTEST, then each lab scenario of $SCENARIOS (both from /mnt/job/env)
# with `pktfate lab demo --json`.
# Results go to the job folder, one NAME.jsonl (the watch's lines) and NAME.log
# (the demo's commentary) per scenario; `done` marks the end.
job=/mnt/job
# shellcheck source=/dev/null
. "$job/env"
exec >"$job/guest.log" 2>&1
set -x
uname -r >"$job/kernel"
sh /mnt/src/tests/vm/guest-install.sh
pktfate reasons >"$job/reasons.txt" 2>&1
pktfate reasons --json >"$job/reasons.json" 2>&1
# Tests of the suite (PYTEST: paths or node ids), from the guest's own copy of the
# checkout (guest-install.sh), against the pktfate installed there.
if [ -n "${PYTEST:-}" ]; then
	# shellcheck disable=SC2086 # one word per path
	(cd /root/pktfate && timeout "${PYTEST_TIMEOUT:-3000}" /opt/pktfate/bin/python -m pytest -v -rs \
		-p no:cacheprovider --junitxml="$job/pytest.xml" $PYTEST >"$job/pytest.log" 2>&1)
	echo "pytest exit $?" >>"$job/exits"
fi
for name in $SCENARIOS; do
	timeout 300 pktfate lab demo "$name" --prefix vm --json --duration "${DURATION:-10}" \
		>"$job/$name.jsonl" 2>"$job/$name.log"
	echo "$name exit $?" >>"$job/exits"
done
touch "$job/done"
