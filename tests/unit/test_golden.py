"""Every recording kept in tests/data, replayed with `pktfate explain`, gives the
flows and the diagnosis it gave when its golden file was written: a change of
the model inside (types, rules moved between modules) must not change what
pktfate says. The human report is kept too, so a change of wording shows.

A change that is meant shows as a diff here: rewrite the golden files with

    PKTFATE_GOLDEN_UPDATE=1 .venv/bin/python -m pytest tests/unit/test_golden.py

and commit them with the change that explains the diff."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from pktfate.watch import run_explain

DATA = Path(__file__).resolve().parents[1] / "data"
GOLDEN = DATA / "golden"
RECORDINGS = sorted([*DATA.glob("*.jsonl"), *DATA.glob("lab/*.jsonl")])
UPDATE = bool(os.environ.get("PKTFATE_GOLDEN_UPDATE"))


def _name(path: Path) -> str:
    return str(path.relative_to(DATA).with_suffix("")).replace("/", "-")


def _explain(path: Path, json_out: bool) -> str:
    out = io.StringIO()
    with path.open("rb") as stream:
        assert run_explain(stream, out, json_out) == 0
    return out.getvalue()


def _what_it_says(path: Path) -> dict:
    """The flow lines and the diagnosis of the replay, as parsed JSON."""
    lines = [json.loads(line) for line in _explain(path, True).splitlines()]
    return {"flows": [line for line in lines if line["kind"] == "flow"],
            "diagnosis": next(line for line in lines if line["kind"] == "diagnosis")}


def test_there_are_recordings_of_every_lab_scenario():
    from pktfate.lab.scenarios import SCENARIOS

    assert {p.stem for p in DATA.glob("lab/*.jsonl")} == set(SCENARIOS)


@pytest.mark.parametrize("path", RECORDINGS, ids=_name)
def test_replay_says_what_it_said(path):
    said = _what_it_says(path)
    human = _explain(path, False)
    golden_json = GOLDEN / f"{_name(path)}.json"
    golden_text = GOLDEN / f"{_name(path)}.txt"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        golden_json.write_text(json.dumps(said, indent=1, sort_keys=True) + "\n")
        golden_text.write_text(human)
    assert said == json.loads(golden_json.read_text())
    assert human == golden_text.read_text()
