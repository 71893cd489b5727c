"""Following packets through NAT and the host's context record, live in the lab:
real DNAT, real forwarding settings, real listeners and cgroup programs."""

import pytest

from pktfate.lab.scenarios import ADDRESSES, SCENARIOS

from .conftest import diagnosis, matching

pytestmark = pytest.mark.integration
NAT_URL = f"http://{ADDRESSES['server_ip']}:{ADDRESSES['nat_port']}/"


def _run(lab, watch, name):
    scenario = SCENARIOS[name]
    lab.up(name)
    w = watch("--port", scenario.port)
    for command in scenario.commands("traffic", "client"):
        lab.sh("client", command, check=False)
    return w.stop()


def test_a_port_mapping_with_forwarding_off_is_followed_past_the_rewrite(lab, watch):
    lines = _run(lab, watch, "forwarding-off")
    tracked = matching(lines, kind="packet", hook="drop", tracked=True)
    assert tracked and {(p["dst"], p["dport"], p["reason"]) for p in tracked} == \
        {(ADDRESSES["backend_ip"], 80, "IP_INADDRERRORS")}
    (flow,) = matching(lines, kind="flow", local_port=8100, proto="tcp")
    assert flow["rewrites"] == [{"kind": "dnat", "addr": ADDRESSES["backend_ip"], "port": 80,
                                 "count": flow["syn_in"]}]
    assert flow["syn_fates"] == {"dropped": flow["syn_in"]}
    (context,) = matching(lines, kind="context")
    assert context["sysctls"]["net.ipv4.ip_forward"] == 0
    assert [(r["target"], r["to"], r["dport"]) for r in context["nat"]] == \
        [("DNAT", f"{ADDRESSES['backend_ip']}:80", "8100")]
    assert context["rewrite_routes"][ADDRESSES["backend_ip"]]["oif"] == "ctr0"
    top = diagnosis(lines)[0]
    assert top["cause"] == "forwarding-off"
    assert any("-j DNAT --to-destination 172.30.0.2:80" in e for e in top["evidence"])
    assert any("sysctl -w net.ipv4.ip_forward=1" in f for f in top["fix"])


def test_without_tracking_the_same_incident_loses_its_drops(lab, watch):
    """The contrast that shows tracking at work: with it off, the rewritten SYNs'
    drops are not seen and the SYNs are only 'unanswered'."""
    lab.up("forwarding-off")
    w = watch("--port", "8100", "--no-track")
    lab.sh("client", f"curl -sS -m 2 -o /dev/null {NAT_URL}", check=False)
    lines = w.stop()
    assert not matching(lines, kind="packet", hook="drop")
    assert diagnosis(lines)[0]["cause"] == "unanswered"


def test_the_listener_its_process_and_its_cgroup_program_are_recorded(lab, watch):
    lines = _run(lab, watch, "cgroup-filter")
    (context,) = matching(lines, kind="context")
    (sock,) = context["listeners"]["80"]["sockets"]
    assert sock["addr"] == "0.0.0.0" and sock["backlog"] == 16
    (proc,) = sock["processes"]
    assert proc["cgroup"].startswith("/") and proc["cgroup"].rsplit("/", 1)[1].startswith(
        "pktfate-lab-80-")
    assert [(p["attach"], p["name"]) for p in proc["cgroup_programs"]] == \
        [("ingress", "deny_ingress")]
    top = diagnosis(lines)[0]
    assert top["cause"] == "socket-filter"
    assert any("runs BPF program deny_ingress" in e for e in top["evidence"])


def test_a_localhost_only_listener_is_named_with_its_process(lab, watch):
    lines = _run(lab, watch, "localhost-only")
    (context,) = matching(lines, kind="context")
    assert [s["addr"] for s in context["listeners"]["80"]["sockets"]] == ["127.0.0.1"]
    top = diagnosis(lines)[0]
    assert top["cause"] == "localhost-only"
    assert any(e.startswith("listening on 127.0.0.1:80: python3 (pid ") for e in top["evidence"])
