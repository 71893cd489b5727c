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


def test_a_packet_mapped_into_a_container_keeps_one_story_across_namespaces(lab, watch):
    """With --all-netns: the SYN rewritten to the container's closed port is refused
    there (RST, NO_SOCKET in the container's namespace), and that is the fate of the
    flow to :8101 on the server, not a second, unrelated flow."""
    lab.up("nat-healthy")
    lab.sh("server", "iptables -t nat -I PREROUTING -p tcp --dport 8101 -j DNAT "
                     f"--to-destination {ADDRESSES['backend_ip']}:81")
    w = watch("--port", "8101", "--all-netns")
    lab.sh("client", f"curl -sS -m 2 -o /dev/null http://{ADDRESSES['server_ip']}:8101/",
           check=False)
    lines = w.stop()
    refused = matching(lines, kind="packet", hook="rst-sent", tracked=True)
    assert refused and refused[0]["dst"] == ADDRESSES["backend_ip"]
    arrival = matching(lines, kind="packet", hook="tc-ingress", dport=8101)[0]
    assert refused[0]["netns"] != arrival["netns"]  # refused in the container's namespace
    flows = matching(lines, kind="flow", proto="tcp", peer=ADDRESSES["client_ip"])
    server_side = [f for f in flows if f["local_port"] == 8101]
    assert len(server_side) == 1 and server_side[0]["syn_fates"] == {"reset": 1}
    assert not [f for f in flows if f["local"] == ADDRESSES["backend_ip"]]
    top = diagnosis(lines)[0]
    assert top["cause"] == "no-listener"
    assert top["summary"].startswith(f"Nothing listens on {ADDRESSES['backend_ip']}:81, where "
                                     "this host's DNAT sends port 8101")


def test_answers_lost_names_the_static_neighbour_entry_they_go_to(lab, watch):
    lines = _run(lab, watch, "answers-lost")
    top = diagnosis(lines)[0]
    assert top["cause"] == "answers-lost"
    assert f"neighbour entry for {ADDRESSES['router_server_ip']} on eth0: PERMANENT " \
           "(02:00:0a:00:02:77): a static entry; if that address is wrong, everything sent " \
           "through it is lost without a trace" in top["evidence"]


def test_syn_queue_full_shows_the_listener_its_queue_and_the_settings(lab, watch):
    lines = _run(lab, watch, "syn-queue-full")
    top = diagnosis(lines)[0]
    assert top["cause"] == "syn-queue-full"
    listening = [e for e in top["evidence"] if e.startswith("listening on 0.0.0.0:80: python3")]
    assert listening and listening[0].endswith("accept queue 0 of 5")
    assert any(e.startswith("settings: ") and "net.ipv4.tcp_syncookies=0" in e
               for e in top["evidence"])
