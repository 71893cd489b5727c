"""The fault matrix (tracer/lab/faults.py), live: each cell's lab built, pktfate
watching the server, the client's traffic (and the noise) sent; the top finding
is the fault's cause whatever the topology, family and noise, and no cell with a
fault says healthy. `make test` runs the pairwise subset; `make fault-matrix`
every cell (PKTFATE_FAULTS=all), with the table written to docs/FAULTS.md."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pktfate.lab.faults import FAULTS, Cell, cells, pairwise, scenario

from .conftest import diagnosis

pytestmark = pytest.mark.integration
ALL = os.environ.get("PKTFATE_FAULTS") == "all"
TABLE = os.environ.get("PKTFATE_FAULTS_TABLE")
RESULTS: dict[str, tuple[Cell, list[str], str]] = {}


@pytest.fixture(scope="module", autouse=True)
def _table():
    yield
    if TABLE and RESULTS:
        Path(TABLE).write_text(_markdown())


def _markdown() -> str:
    lines = ["# The fault matrix", "",
             "Every cell of tracer/lab/faults.py run live by `sudo make fault-matrix` on "
             f"{os.uname().release} ({time.strftime('%Y-%m-%d')}): the cause pktfate named "
             "first, and the others.", "",
             "| cell | expected | named first | right | all causes |", "|---|---|---|---|---|"]
    for cell, causes, _summary in (RESULTS[c.name] for c in cells() if c.name in RESULTS):
        right = causes[0] == cell.expect and \
            (cell.expect == "healthy" or "healthy" not in causes)
        lines.append(f"| {cell.name} | {cell.expect} | {causes[0]} | "
                     f"{'yes' if right else 'NO'} | {', '.join(causes)} |")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("cell", cells() if ALL else pairwise(), ids=lambda c: c.name)
def test_the_top_finding_is_the_faults_cause(lab, watch, cell):
    sc = scenario(cell)
    lab.up_with(sc)
    w = watch("--port", sc.port)
    for command in sc.commands("traffic", "client"):
        lab.sh("client", command, check=False)
    findings = diagnosis(w.stop())
    causes = [f["cause"] for f in findings]
    RESULTS[cell.name] = (cell, causes, findings[0]["summary"])
    assert causes[0] == cell.expect, (causes, findings[0]["summary"])
    if cell.fault == "none":
        assert causes.count("healthy") == 1
    else:
        assert "healthy" not in causes


def test_the_pairwise_subset_covers_every_pair_of_choices():
    chosen = pairwise()
    factors = ("topology", "family", "fault", "noise")
    for a, b in ((a, b) for i, a in enumerate(factors) for b in factors[i + 1:]):
        every = {(getattr(c, a), getattr(c, b)) for c in cells()}
        assert {(getattr(c, a), getattr(c, b)) for c in chosen} == every, (a, b)
    assert set(FAULTS) == {c.fault for c in chosen}
