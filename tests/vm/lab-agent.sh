#!/bin/sh
# Runs inside each VM of the booted lab (tests/vm/lab.py; vmjob.service runs it as
# root from the 9p share). Does what `vagrant up` does for a machine of the lab:
# gives the lab NICs their private_network addresses, installs pktfate from the
# shared source, runs vagrant/provision.sh ROLE. Then it stands in for `vagrant
# ssh`: the host drops shell commands into $job/cmd as N.sh; each is run (in the
# background, so that a watch and traffic overlap) with its output in N.out and
# its exit status in N.rc. The file $job/halt ends the loop, and the VM; so does
# $LIFETIME seconds after boot, should the host's runner have died without a word.
job=/mnt/job
# shellcheck source=/dev/null
. "$job/env" # ROLE, NICS ("eth0=10.0.1.2/24 ..."), LIFETIME
exec >"$job/agent.log" 2>&1
set -x
hostname "pktfate-$ROLE"
for nic in $NICS; do
	ip address add "${nic#*=}" dev "${nic%%=*}"
	ip link set "${nic%%=*}" up
done
sh /mnt/src/tests/vm/guest-install.sh
PKTFATE_SKIP_SETUP=1 PKTFATE_SOURCE=/root/pktfate sh /root/pktfate/vagrant/provision.sh "$ROLE" \
	>"$job/provision.log" 2>&1
echo $? >"$job/provisioned.tmp" && mv "$job/provisioned.tmp" "$job/provisioned"
set +x
mkdir -p "$job/cmd"
end=$(($(cut -d. -f1 /proc/uptime) + ${LIFETIME:-3600}))
while [ ! -e "$job/halt" ] && [ "$(cut -d. -f1 /proc/uptime)" -lt "$end" ]; do
	for cmd in "$job"/cmd/*.sh; do
		[ -e "$cmd" ] || continue
		n=${cmd%.sh}
		mv "$cmd" "$n.run" || continue
		(
			sh "$n.run" >"$n.out" 2>&1
			echo $? >"$n.rc.tmp"
			mv "$n.rc.tmp" "$n.rc"
		) &
	done
	sleep 0.3
done
wait
