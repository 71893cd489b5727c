"""pktfate installed from its wheel into a fresh virtualenv, run from / (nowhere
near a checkout), diagnoses the founding incident in the lab: the BPF sources
and the lab travel with the package."""

from __future__ import annotations

import os
import subprocess

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture
def installed(built_wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, timeout=300)
    proc = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(built_wheel)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return venv / "bin" / "pktfate"


def test_the_installed_package_runs_the_lab_demo_from_anywhere(installed):
    prefix = f"pi{os.getpid() % 100000}"
    try:
        proc = subprocess.run([str(installed), "lab", "demo", "checksum", "--prefix", prefix,
                               "--duration", "6"], capture_output=True, text=True,
                              timeout=300, cwd="/")
    finally:
        subprocess.run([str(installed), "lab", "down", "--prefix", prefix],
                       capture_output=True, timeout=120, cwd="/")
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[lines.index("DIAGNOSIS") + 1].startswith("1. [tcp-bad-checksum]"), proc.stdout
    version = subprocess.run([str(installed), "--version"], capture_output=True, text=True,
                             cwd="/", timeout=60).stdout
    assert version.startswith("pktfate ") and "BTF:" in version and "bcc:" in version
