"""Every lab scenario, with the client traffic its definition names: the top
finding where pktfate watches is the cause the scenario is about; explaining the
recording again gives the same findings; the human report fits 100 columns."""

import io
import json

import pytest

from pktfate.lab.scenarios import SCENARIOS
from pktfate.watch import run_explain

from .conftest import diagnosis

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_top_finding_names_the_scenarios_cause(lab, watch, name):
    scenario = SCENARIOS[name]
    lab.up(name)
    w = watch("--port", scenario.port, host=scenario.watch_host)
    for command in scenario.commands("traffic", "client"):
        lab.sh("client", command, check=False)
    findings = diagnosis(w.stop())
    causes = [f["cause"] for f in findings]
    assert causes[0] == scenario.expect, (causes, findings[0]["summary"])
    assert findings[0]["fix"] or scenario.expect == "healthy"
    if scenario.expect == "healthy":
        assert causes == ["healthy"]
    else:  # never a wrong verdict: no healthy finding beside a cause
        assert "healthy" not in causes

    replayed = io.StringIO()
    run_explain(io.BytesIO(w.text.encode()), replayed, json_out=True)
    assert json.loads(replayed.getvalue().splitlines()[-1])["findings"] == findings

    human = io.StringIO()
    run_explain(io.BytesIO(w.text.encode()), human, json_out=False)
    report = human.getvalue().splitlines()
    assert max(map(len, report)) < 100
    assert report[report.index("DIAGNOSIS") + 1].startswith(f"1. [{scenario.expect}]")
