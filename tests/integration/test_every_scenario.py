"""Every lab scenario, with the client traffic its definition names: the top
finding where pktfate watches is the cause the scenario is about."""

import pytest

from tracer.scenarios import SCENARIOS

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
