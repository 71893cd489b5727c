"""Each option's effect, shown on real traffic: a filter keeps what is outside it
out of the kernel's own counts (the stats line's `matched` and `kernel_counts`,
counted in the kernel before anything reaches user space), compared with a watch
without the filter on the same traffic, both running at once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import Counter

import pytest

from pktfate.lab.scenarios import ADDRESSES, SCENARIOS

from .conftest import matching

pytestmark = pytest.mark.integration
PKTFATE = [sys.executable, "-m", "pktfate"]
SERVER, CLIENT = ADDRESSES["server_ip"], ADDRESSES["client_ip"]
ROUTER_S = ADDRESSES["router_server_ip"]  # the router's address on the server's link


@pytest.fixture(scope="module")
def healthy(lab):
    lab.up("healthy")
    return lab


def _stats(lines: list[dict]) -> dict:
    return next(line for line in lines if line["kind"] == "stats")


def _counts(lines: list[dict], **want) -> int:
    """The kernel's exact count of the stats line's entries matching `want`."""
    return sum(e["count"] for e in _stats(lines)["kernel_counts"]
               if all(e.get(k) == v for k, v in want.items()))


def _udp(lab, count: int) -> None:
    """`count` datagrams from the client to the server's UDP port 80 (closed), from one
    unconnected socket (not told of the ICMP errors that come back)."""
    code = ("import socket, sys\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"for _ in range({count}):\n    s.sendto(b'x', ('{SERVER}', 80))\n")
    subprocess.run(lab.exec_argv("client", [sys.executable, "-c", code]), check=True, timeout=30)


def _curl(lab, host: str) -> None:
    lab.sh(host, f"curl -sS -m 5 -o /dev/null http://{SERVER}/")


def test_host_keeps_other_peers_out_of_the_kernels_counts(healthy, watch):
    every = watch("--port", "80", "--no-xdp")
    only = watch("--port", "80", "--host", CLIENT, "--no-xdp")
    _curl(healthy, "client")
    _curl(healthy, "router")  # from 10.0.2.1: outside --host
    all_lines, only_lines = every.stop(), only.stop()
    from_router = _counts(all_lines, hook="tc-ingress", src=ROUTER_S)
    assert from_router >= 5  # the router's request reached the server: SYN, ACK, data, FIN...
    assert _counts(only_lines, src=ROUTER_S) == _counts(only_lines, dst=ROUTER_S) == 0
    assert _counts(only_lines, hook="tc-ingress", src=CLIENT) == \
        _counts(all_lines, hook="tc-ingress", src=CLIENT) > 0
    assert _stats(only_lines)["matched"]["tc-ingress"] == \
        _stats(all_lines)["matched"]["tc-ingress"] - from_router
    assert not [line for line in only_lines if ROUTER_S in (line.get("src"), line.get("dst"))]


def test_proto_keeps_other_protocols_out_of_the_kernels_counts(healthy, watch):
    every = watch("--port", "80", "--no-xdp")
    udp = watch("--port", "80", "--proto", "udp", "--no-xdp")
    _curl(healthy, "client")
    _udp(healthy, 3)
    healthy.sh("client", f"ping -c 1 -W 2 {SERVER}")  # behind the datagrams: all handled
    all_lines, udp_lines = every.stop(), udp.stop()
    assert _counts(all_lines, hook="tc-ingress", proto="tcp") >= 5
    assert _counts(udp_lines, proto="tcp") == 0
    assert _counts(udp_lines, hook="tc-ingress", proto="udp") == \
        _counts(all_lines, hook="tc-ingress", proto="udp") == 3
    assert not matching(udp_lines, kind="packet", proto="tcp")


def test_iface_attaches_there_alone(healthy, watch):
    """On the router, which forwards every packet from one interface to the other:
    tc on eth-c alone sees the client's packets come in and the server's go out,
    half of what tc on both sees (each packet in at one, out at the other)."""
    both = watch("--port", "80", "--no-xdp", host="router")
    one = watch("--port", "80", "--no-xdp", "--iface", "eth-c", host="router")
    _curl(healthy, "client")
    both_lines, one_lines = both.stop(), one.stop()
    assert one_lines[0]["tc"] == ["eth-c"] and sorted(both_lines[0]["tc"]) == ["eth-c", "eth-s"]
    matched_one, matched_both = _stats(one_lines)["matched"], _stats(both_lines)["matched"]
    assert matched_both["tc-ingress"] == matched_both["tc-egress"] > 0
    assert matched_one["tc-ingress"] + matched_one["tc-egress"] == matched_both["tc-ingress"]
    assert _counts(one_lines, hook="tc-ingress", src=CLIENT) == matched_one["tc-ingress"]
    assert {line["iface"] for line in one_lines
            if line["kind"] == "packet" and line["hook"].startswith("tc-")} == {"eth-c"}


@pytest.mark.parametrize(("option", "absent", "present"), [
    ("--no-xdp", "xdp", "tc-ingress"),
    ("--no-tc", "tc-ingress", "xdp"),
])
def test_no_xdp_and_no_tc_leave_their_hook_out(healthy, watch, option, absent, present):
    w = watch("--port", "80", "--xdp-generic" if option == "--no-tc" else "--no-links", option)
    start = w.lines()[0]
    _curl(healthy, "client")
    lines = w.stop()
    matched = _stats(lines)["matched"]
    assert matched.get(absent, 0) == 0 and matched[present] > 0
    assert (start["xdp"], start["tc"]) == (({}, ["eth0"]) if option == "--no-xdp" else
                                          ({"eth0": "generic"}, []))
    assert not matching(lines, kind="packet", hook=absent)


def test_all_events_prints_every_packet_the_json_holds(healthy, watch):
    """Three watches of the same traffic: the human report with --all-events has a
    line per packet event of the JSON one; without it, only the noteworthy."""
    recording = watch("--port", "80", "--no-xdp")
    every = watch("--port", "80", "--no-xdp", "--all-events", json_out=False)
    noteworthy = watch("--port", "80", "--no-xdp", json_out=False)
    _curl(healthy, "client")
    packets = matching(recording.stop(), kind="packet")
    every.stop()
    noteworthy.stop()
    assert every.returncode == noteworthy.returncode == 0

    def event_lines(text: str) -> list[str]:  # 12:34:56.789 PROTO ...
        return [line for line in text.splitlines()
                if line[:2].isdigit() and line[2:3] == ":" and " TCP " in line[:20]]

    tcp = [p for p in packets if p["proto"] == "tcp"]
    assert len(event_lines(every.text)) == len(tcp) > 5
    assert 0 < len(event_lines(noteworthy.text)) < len(tcp)


def test_the_start_says_where_the_recording_was_made(healthy, watch):
    lines = watch("--port", "80", "--no-xdp").stop()
    host = lines[0]["host"]
    links = json.loads(healthy.sh("server", "ip -j addr show").stdout)
    assert host["netns"] == lines[0]["netns"] == os.stat(
        f"/run/netns/{healthy.ns('server')}").st_ino
    assert host["hostname"] == socket.gethostname()
    assert [(i["name"], i["mac"], sorted(i["addrs"])) for i in host["interfaces"]] == [
        (link["ifname"], None if link["ifname"] == "lo" else link["address"],
         sorted(a["local"] for a in link.get("addr_info", []))) for link in links]
    assert SERVER in next(i["addrs"] for i in host["interfaces"] if i["name"] == "eth0")


# --- probe ---------------------------------------------------------------------

def _probe(lab, *args: str) -> dict:
    proc = subprocess.run(lab.exec_argv("client", [*PKTFATE, "probe", SERVER, *args, "--json"]),
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    last = json.loads(proc.stdout.splitlines()[-1])
    return {(r["proto"], r["port"]): r for r in last["results"]}


def test_probe_max_hops_bounds_the_ttls_sent(healthy):
    found = _probe(healthy, "--port", "80/tcp", "--max-hops", "1")
    web = found[("tcp", 80)]
    assert [h["hop"] for h in web["hops"]] == [1]
    assert web["hops"][0]["answer"] == "time-exceeded" and web["last_hop"] == 1
    further = _probe(healthy, "--port", "80/tcp")[("tcp", 80)]
    # Unbounded, the TTLs go on to the server's hop, where the SYN-ACK comes from.
    assert [h["hop"] for h in further["hops"]] == [1, 2]
    assert further["hops"][1]["answer"] == "syn-ack"
    assert web["probes"] < further["probes"]


@pytest.mark.parametrize(("protos", "expected"), [
    (("icmp",), {("icmp", None)}),
    (("tcp",), {("tcp", 80)}),
    (("udp", "icmp"), {("udp", 80), ("icmp", None)}),
    (("all",), {("icmp", None), ("tcp", 80), ("udp", 80)}),
    ((), {("icmp", None), ("tcp", 80), ("udp", 80)}),
])
def test_probe_proto_chooses_what_is_probed(healthy, protos, expected):
    """A port without '/PROTO' is probed with the protocols --proto names (a port
    with one, with that one whatever --proto says)."""
    args = [arg for proto in protos for arg in ("--proto", proto)]
    assert set(_probe(healthy, "--port", "80", *args)) == expected
    assert set(_probe(healthy, "--port", "53/udp", "--proto", "tcp")) == {("udp", 53)}


@pytest.fixture
def slow_udp_echo(healthy):
    """A UDP service on the server's port 5353 that answers each datagram after 2 s."""
    code = ("import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.bind(('0.0.0.0', 5353))\nprint('ready', flush=True)\nwhile True:\n"
            "    data, peer = s.recvfrom(2048)\n    time.sleep(2)\n    s.sendto(data, peer)\n")
    proc = subprocess.Popen(healthy.exec_argv("server", [sys.executable, "-c", code]),
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield 5353
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_probe_wait_is_how_long_answers_are_waited_for(healthy, slow_udp_echo):
    """Two hops, two rounds of probes at most: with 0.2 s a round, the probe is over
    before the answer comes; with 4 s, it waits for it."""
    probe = ("--port", f"{slow_udp_echo}/udp", "--proto", "udp", "--max-hops", "2")
    late = _probe(healthy, *probe, "--wait", "0.2")
    assert late[("udp", slow_udp_echo)]["answer"] == "none"
    waited = _probe(healthy, *probe, "--wait", "4")
    assert waited[("udp", slow_udp_echo)]["answer"] == "udp-reply"


# --- lab -----------------------------------------------------------------------

def _lab_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*PKTFATE, "lab", *args], capture_output=True, text=True,
                          timeout=timeout)


def _namespaces(prefix: str) -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in listed.splitlines() if line.startswith(f"{prefix}-")}


@pytest.fixture
def lab_prefix():
    prefix = f"pc{abs(hash(__file__ + str(id(object())))) % 10000}"
    try:
        yield prefix
    finally:
        _lab_cli("down", "--prefix", prefix)


def test_lab_up_and_down_from_the_command_line(lab_prefix):
    up = _lab_cli("up", "--scenario", "no-listener", "--prefix", lab_prefix)
    assert up.returncode == 0, up.stderr
    assert _namespaces(lab_prefix) >= {f"{lab_prefix}-client", f"{lab_prefix}-router",
                                       f"{lab_prefix}-server"}
    # The scenario applied: nothing answers :80, the kernel resets (curl's 7, at once).
    curl = subprocess.run(["ip", "netns", "exec", f"{lab_prefix}-client", "curl", "-sS", "-m",
                           "3", f"http://{SERVER}/"], capture_output=True, text=True)
    assert curl.returncode == 7, curl.stderr
    down = _lab_cli("down", "--prefix", lab_prefix)
    assert down.returncode == 0, down.stderr
    assert _namespaces(lab_prefix) == set()


def test_lab_list_names_every_scenario_and_its_cause():
    listed = _lab_cli("list")
    assert listed.returncode == 0, listed.stderr
    heads = [line for line in listed.stdout.splitlines() if line and not line[0].isspace()]
    assert {line.split()[0] for line in heads} == set(SCENARIOS)
    for line in heads:
        name = line.split()[0]
        assert line.endswith(f": {SCENARIOS[name].expect})"), line


def test_lab_demo_json_and_keep(lab_prefix):
    demo = _lab_cli("demo", "no-listener", "--prefix", lab_prefix, "--json", "--keep",
                    "--duration", "4")
    assert demo.returncode == 0, demo.stderr
    lines = [json.loads(line) for line in demo.stdout.splitlines()]
    assert lines[0]["kind"] == "start" and lines[-1]["kind"] == "diagnosis"
    assert lines[-1]["findings"][0]["cause"] == "no-listener"
    assert Counter(line["kind"] for line in lines)["packet"] > 0
    assert demo.stderr.strip()  # the commentary, on stderr
    assert len(_namespaces(lab_prefix)) >= 3  # kept
    again = _lab_cli("demo", "healthy", "--prefix", lab_prefix, "--duration", "3")
    assert again.returncode == 0, again.stderr
    assert len(_namespaces(lab_prefix)) == 0  # not kept this time
