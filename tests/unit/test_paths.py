"""Several hosts' recordings merged (pktfate explain A B C), on recordings of the
lab's three namespaces made by `pktfate lab demo SCENARIO --everywhere
--recordings tests/data/paths/SCENARIO`: the host responsible named first, the
same story whatever the order of the recordings, clocks seconds apart lined up,
packets followed across a NAT on the router, a host that saw nothing of a flow
taken as evidence."""

from __future__ import annotations

import io
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pktfate import __version__
from pktfate.model.protocols import TcpFlags
from pktfate.paths.findings import diagnose_paths
from pktfate.paths.merge import load, merge
from pktfate.watch import run_explain_merged

DATA = Path(__file__).resolve().parents[1] / "data" / "paths"
HOSTS = ("client", "router", "server")


def _recordings(scenario: str, hosts=HOSTS, edit=None) -> list[tuple[str, io.BytesIO]]:
    out = []
    for host in hosts:
        text = (DATA / scenario / f"{host}.jsonl").read_text()
        if edit is not None:
            text = edit(host, text)
        out.append((host, io.BytesIO(text.encode())))
    return out


def _merged(scenario: str, hosts=HOSTS, edit=None):
    return merge(load(name, stream, __version__)
                 for name, stream in _recordings(scenario, hosts, edit))


def _story(scenario: str, hosts=HOSTS, edit=None, json_out: bool = False) -> str:
    out = io.StringIO()
    assert run_explain_merged(_recordings(scenario, hosts, edit), out, json_out) == 0
    return out.getvalue()


@pytest.mark.parametrize(("scenario", "cause", "host", "said"), [
    ("checksum", "checksum-not-completed", "router",
     "arrived at router (eth-c) with only the pseudo-header sum"),
    ("path-filters", "forged-reset", "router", "server's own recording has no such RST"),
    ("never-arrived", "dropped-on-path", "router",
     "rule whose counter moved on router: iptables -t filter -A FORWARD -p tcp -m tcp "
     "--dport 80 -j DROP"),
])
def test_the_host_responsible_comes_first(scenario, cause, host, said):
    findings = diagnose_paths(_merged(scenario))
    top = findings[0]
    assert (top.cause, top.host) == (cause, host)
    assert any(said in line for line in top.evidence), top.evidence
    assert top.fix and all(line.startswith(f"on {host}") or "sender" in line
                           for line in top.fix)


def test_healthy_paths_name_nobody():
    assert diagnose_paths(_merged("router-nat")) == []
    assert "nothing on the way" in _story("router-nat")


@pytest.mark.parametrize("scenario", ["checksum", "path-filters", "never-arrived"])
def test_the_order_of_the_recordings_changes_nothing(scenario):
    stories = {_story(scenario, order) for order in itertools.permutations(HOSTS)}
    assert len(stories) == 1


def _shifted(seconds: float):
    """An edit that moves the server's clock by `seconds`."""
    def edit(host: str, text: str) -> str:
        if host != "server":
            return text
        lines = []
        for line in text.splitlines():
            record = json.loads(line)
            if "ts" in record:
                record["ts"] += seconds
            lines.append(json.dumps(record))
        return "\n".join(lines) + "\n"
    return edit


@pytest.mark.parametrize("seconds", [3.0, -42.5])
def test_clocks_seconds_apart_are_lined_up(seconds):
    plain, shifted = _merged("checksum"), _merged("checksum", edit=_shifted(seconds))
    offsets = {o.host: o for o in shifted.offsets}
    before = {o.host: o for o in plain.offsets}
    assert offsets["server"].offset - before["server"].offset == pytest.approx(seconds, abs=1e-6)
    assert offsets["server"].matched == before["server"].matched > 0
    assert offsets["server"].spread < 0.01  # a few packets, microseconds apart
    assert [(f.cause, f.host, f.count) for f in diagnose_paths(shifted)] == \
        [(f.cause, f.host, f.count) for f in diagnose_paths(plain)]


def test_packets_are_followed_across_a_nat_on_the_router():
    """The router masquerades the client: the server sees 10.0.2.1, the SYN is still
    one packet from the client to the server, the rewrite said where it happened."""
    merged = _merged("router-nat")
    syn = next(p for p in merged.paths if p.first.tcp_flags == TcpFlags.SYN
               and p.first.dport == 80)
    assert syn.hosts() == ["client", "router", "server"]
    assert syn.first.src == "10.0.1.2" and syn.at("server")[0].src == "10.0.2.1"
    story = _story("router-nat")
    assert "router: sent tc eth-s ttl 63 (now 10.0.2.1:" in story


def test_a_host_that_saw_nothing_is_evidence():
    """Without the router's recording, the SYNs left the client and the server,
    which recorded, never saw them: lost between the two."""
    findings = diagnose_paths(_merged("never-arrived", hosts=("client", "server")))
    assert (findings[0].cause, findings[0].host) == ("never-arrived", "client")
    assert "left client (eth0) and never reached server" in findings[0].summary
    assert findings[0].count == 3


def test_a_forger_nobody_recorded_is_told_by_the_ttl():
    """Client and server only: the RST in the server's name arrived at the client
    from hop 1 while the server's packets come from hop 2, and the server's own
    recording never sent it."""
    findings = diagnose_paths(_merged("path-filters", hosts=("client", "server")))
    top = findings[0]
    assert (top.cause, top.host) == ("forged-reset", "the device at hop 1 from client")
    assert "server's own recording has no such RST: it never sent one" in top.evidence
    assert any("TTL 64 (initial 64, hop 1)" in line and "come from hop 2" in line
               for line in top.evidence), top.evidence


@pytest.mark.parametrize(("hosts", "device"), [
    (("client", "router", "server", "client-probe"), "router"),
    (("client", "server", "client-probe"), "the device at hop 1 from client"),
    (("server", "client-probe"), "the device at hop 1 from 10.0.1.2"),
])
def test_a_probe_from_the_client_counts_as_a_recording(hosts, device):
    """pktfate probe --json from the client: its RST from hop 1 in the server's name
    joins the server's own record of no RST, with or without the other watches."""
    def recordings():
        return [(h, io.BytesIO((DATA / "path-filters" / (
            f"{h}.json" if h.endswith("probe") else f"{h}.jsonl")).read_bytes())) for h in hosts]

    findings = diagnose_paths(merge(load(n, s, __version__) for n, s in recordings()))
    forged = [f for f in findings if f.cause == "forged-reset"]
    assert len(forged) == 1 and forged[0].host == device and findings[0] is forged[0]
    assert any(line.startswith("client-probe: The RST for TCP :22 claims to come from "
                               "10.0.2.2") for line in forged[0].evidence)
    assert "server's own recording has no RST from port 22: it never sent one" in \
        forged[0].evidence or "server's own recording has no such RST: it never sent one" \
        in forged[0].evidence


def test_the_merged_json():
    record = json.loads(_story("checksum", json_out=True))
    assert record["kind"] == "merged"
    assert [h["name"] for h in record["hosts"]] == list(HOSTS)
    assert record["hosts"][0]["clock_offset"] == 0.0
    top = record["findings"][0]
    assert {k: top[k] for k in ("cause", "host", "packets")} == {
        "cause": "checksum-not-completed", "host": "router", "packets": 3}
    assert record["hosts_own"]["server"][0] == "tcp-bad-checksum"
    syn = next(p for p in record["paths"] if "[S]" in p["packet"])
    assert syn["count"] == 3 and syn["steps"][-1] == "server: DROPPED TCP_CSUM at tcp_v4_rcv"


def test_explain_with_several_recordings_from_the_command_line():
    files = [str(DATA / "path-filters" / f"{host}.jsonl") for host in HOSTS]
    proc = subprocess.run([sys.executable, "-m", "pktfate", "explain", *files],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    top = lines[lines.index("DIAGNOSIS ACROSS HOSTS") + 1]
    assert top.startswith("1. [forged-reset] on router:")
    assert max(map(len, lines)) < 100
