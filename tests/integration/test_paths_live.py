"""Several hosts, live: `pktfate lab demo SCENARIO --everywhere` watches in each of
the lab's namespaces while the client sends, merges the three recordings, and
names the host on the way responsible (the same scenarios tests/unit/test_paths.py
replays from recordings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("scenario", "cause", "host"), [
    ("checksum", "checksum-not-completed", "router"),
    ("path-filters", "forged-reset", "router"),
    ("never-arrived", "dropped-on-path", "router"),
])
def test_everywhere_names_the_host_responsible(scenario, cause, host, tmp_path):
    prefix = f"pw{os.getpid() % 10000}"
    try:
        proc = subprocess.run([sys.executable, "-m", "pktfate", "lab", "demo", scenario,
                               "--everywhere", "--json", "--prefix", prefix, "--duration", "5",
                               "--recordings", str(tmp_path)],
                              capture_output=True, text=True, timeout=600)
    finally:
        subprocess.run([sys.executable, "-m", "pktfate", "lab", "down", "--prefix", prefix],
                       capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    merged = json.loads(proc.stdout)
    top = merged["findings"][0]
    assert (top["cause"], top["host"]) == (cause, host), merged["findings"]
    assert [h["name"] for h in merged["hosts"]] == ["client", "router", "server"]
    # Every host recorded (each its own file; the scenario's probe too where it has
    # one), and the same lab's clocks agree.
    probe = ["client-probe.json"] if scenario == "path-filters" else []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["client.jsonl", "router.jsonl", "server.jsonl", *probe])
    assert all(abs(h["clock_offset"]) < 0.05 for h in merged["hosts"])
