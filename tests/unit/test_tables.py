"""The diagnosis's tables and registry, without root: every drop reason of the
running kernel (read from its BTF) and of recorded Debian kernels has an entry; the
counter table names real counters (recorded /proc/net text); every cause the tables
point to is a registered cause; the README lists exactly the registered causes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pktfate.diagnosis.diagnose import diagnose  # noqa: F401  (registers every rule)
from pktfate.diagnosis.registry import CAUSES, RULES
from pktfate.diagnosis.tables import NORMAL, counter_meanings, drop_reasons
from pktfate.host.counters import parse_snmp
from pktfate.kernel.btf import BTF, BTFError
from pktfate.kernel.discovery import strip_enum_prefix
from pktfate.lab.scenarios import SCENARIOS

DATA = Path(__file__).resolve().parents[1] / "data"
README = Path(__file__).resolve().parents[2] / "README.md"


def _recorded_enum(name: str) -> set[str]:
    lines = (DATA / name).read_text().splitlines()
    return {line.split()[1] for line in lines if line and not line.startswith("#")}


def test_every_drop_reason_of_the_running_kernel_has_an_entry():
    try:
        btf = BTF.from_file()
    except BTFError as exc:
        pytest.fail(f"this kernel's BTF is unreadable: {exc}")
    names = set(strip_enum_prefix(btf.enum("skb_drop_reason"), "SKB_DROP_REASON_").values())
    assert len(names) > 60
    assert names - set(drop_reasons()) == set()


@pytest.mark.parametrize("recorded", ["skb_drop_reason-6.1.0-53.txt",
                                      "skb_drop_reason-6.12.117.txt"])
def test_every_drop_reason_of_debians_kernels_has_an_entry(recorded):
    assert _recorded_enum(recorded) - set(drop_reasons()) == set()


def test_every_entry_is_complete_and_points_to_a_registered_cause():
    for reason in drop_reasons().values():
        assert reason.meaning and reason.usual and reason.look and reason.fix, reason.name
        assert reason.cause == NORMAL or reason.cause in CAUSES, reason.name


def test_the_counter_table_names_counters_the_kernel_has():
    recorded = parse_snmp((DATA / "proc-net-snmp.txt").read_text())
    recorded |= parse_snmp((DATA / "proc-net-netstat.txt").read_text())
    recorded |= parse_snmp((DATA / "proc-net-snmp6.txt").read_text())
    assert "TcpExtTCPReqQFullDrop" in recorded and "Ip6InReceives" in recorded
    assert set(counter_meanings()) - set(recorded) == set()
    for counter in counter_meanings().values():
        assert counter.cause == NORMAL or counter.cause in CAUSES, counter.name


def test_snmp_text_parses_to_named_counters():
    text = "Tcp: RtoAlgorithm InCsumErrors\nTcp: 1 7\n"
    assert parse_snmp(text) == {"TcpRtoAlgorithm": 1, "TcpInCsumErrors": 7}
    assert parse_snmp("Ip6InReceives                   \t12\nIp6InHdrErrors \t0\n") == \
        {"Ip6InReceives": 12, "Ip6InHdrErrors": 0}


def test_the_readme_lists_every_cause_once():
    section = README.read_text().split("## Causes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z0-9-]+)` \| (\d+) \| (.+) \|$", section, re.M)
    listed = {cause: (int(sev), title) for cause, sev, title in rows}
    assert len(rows) == len(listed)
    assert listed == {c.id: (c.severity, c.title) for c in CAUSES.values()}


def test_every_rule_declares_its_causes_and_every_scenario_expects_one():
    assert all(causes for _, causes in RULES)
    for scenario in SCENARIOS.values():
        assert scenario.expect in CAUSES, scenario.name
