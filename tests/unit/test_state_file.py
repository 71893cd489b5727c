"""The state file that lets `pktfate cleanup` undo a killed run, without root:
written before each attachment, emptied as they are removed, and found again only
when the run that wrote it is gone."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pktfate.attach import state


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(state, "STATE_DIR", tmp_path)
    return tmp_path


def test_each_attachment_is_on_disk_before_it_is_made(state_dir):
    record = state.StateFile(netns=4026531840)
    entry = {"index": 2, "name": "eth0", "mode": "generic", "prog_id": 17}
    record.add("xdp", entry)
    on_disk = json.loads((state_dir / f"watch-{os.getpid()}.json").read_text())
    assert on_disk == {"pid": os.getpid(), "netns": 4026531840, "xdp": [entry], "tc": []}
    record.drop("xdp", entry)
    on_disk = json.loads((state_dir / f"watch-{os.getpid()}.json").read_text())
    assert on_disk["xdp"] == []
    record.remove()
    assert list(state_dir.iterdir()) == []


def test_only_runs_that_are_gone_are_leftovers(state_dir):
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    dead_pid = int(ended.stdout)
    for pid in (os.getpid(), dead_pid):
        (state_dir / f"watch-{pid}.json").write_text(json.dumps(
            {"pid": pid, "netns": 1, "xdp": [], "tc": []}))
    (state_dir / "watch-1.json").write_text("{not json")  # torn: skipped, not fatal
    leftovers = state.leftover_states()
    assert [r["pid"] for r in leftovers] == [dead_pid]
    assert leftovers[0]["_path"] == str(state_dir / f"watch-{dead_pid}.json")
