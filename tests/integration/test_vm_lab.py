"""The Vagrant lab booted for real (tests/vm/lab.py): three qemu VMs, client,
router and server, on bridged taps with vnet headers, provisioned by
vagrant/provision.sh, the checksum incident applied by vagrant/scenario.sh and
diagnosed by pktfate on the server VM. About 12 minutes here: `make vm-test`."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.vm]
LAB = Path(__file__).resolve().parents[1] / "vm" / "lab.py"


def test_the_checksum_incident_crosses_three_vms(tmp_path):
    proc = subprocess.Popen([sys.executable, str(LAB), "run", "--scenario", "checksum",
                             "--keep", str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=3000)
    finally:
        if proc.poll() is None:  # SIGTERM: lab.py halts its VMs, deletes its namespace
            proc.terminate()
            proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    for role in ("router", "server", "client"):
        assert f"{role}: provision.sh {role} -> lab: provisioned as the {role}" in out, out
    assert "- checksum: top cause `tcp-bad-checksum` (expected)" in out
    # The traffic's own account: ping answered, curl timed out.
    assert " 0% packet loss" in out and "timed out" in out.lower()
    # What made it: the client's partial checksums, seen arriving on the server.
    jsonl = (tmp_path / "server" / "checksum.jsonl").read_text()
    assert '"checksum": "pseudo-header-only"' in jsonl
