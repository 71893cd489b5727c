"""pktfate probe from the lab's client, real raw-socket probes, answers seen with
BPF, over IPv4 and IPv6. The lab's 'path-filters' scenario: the router (hop 1) forges
RSTs for TCP :22 and drops UDP :53; the server (hop 2) serves :80 and drops TCP :8080
itself. And the firewall rules named, by probe and by watch, are each the one whose
own match covers the packets."""

import json
import subprocess
import sys

import pytest

from pktfate.lab.scenarios import ADDRESSES

from .conftest import diagnosis, matching

pytestmark = pytest.mark.integration
SERVER, ROUTER = ADDRESSES["server_ip"], ADDRESSES["router_client_ip"]
SERVER6, ROUTER6 = ADDRESSES["server_ip6"], ADDRESSES["router_client_ip6"]


def probe(lab, *args: str, json_out: bool = True, target: str = SERVER
          ) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "pktfate", "probe", target, *args]
    if json_out:
        argv.append("--json")
    return subprocess.run(lab.exec_argv("client", argv), capture_output=True, text=True,
                          timeout=120)


def results(proc: subprocess.CompletedProcess, target: str = SERVER) -> dict:
    assert proc.returncode == 0, proc.stderr
    last = json.loads(proc.stdout.splitlines()[-1])
    assert last["kind"] == "probe" and last["target"] == target
    return {(r["proto"], r["port"]): r for r in last["results"]}


@pytest.fixture(scope="module")
def path_lab(lab):
    lab.up("path-filters")
    return lab


def test_forged_rst_is_traced_to_the_router_while_80_reaches_the_server(path_lab, watch):
    server_watch = watch("--port", "22", "--port", "80", host="server")
    found = results(probe(path_lab, "--port", "22/tcp", "--port", "80/tcp", "--proto", "tcp"))
    lines = server_watch.stop()

    rst = found[("tcp", 22)]
    assert rst["answer"] == "rst" and rst["answer_from"] == SERVER  # it claims the server
    assert rst["answer_ttl"] == 64 and rst["answer_hops"] == 1
    assert rst["target_hops"] == 2  # from the server's echo replies (TTL 63)
    assert rst["answered_by"] == "path"
    assert rst["origin"] == ROUTER  # the device that said "time exceeded" at hop 1
    assert "the device at hop 1 (10.0.1.1)" in rst["conclusion"]

    web = found[("tcp", 80)]
    assert web["answer"] == "syn-ack" and web["answered_by"] == "target"
    assert web["answer_hops"] == web["target_hops"] == 2 and web["last_hop"] == 2
    first = dict(web["hops"][0])
    assert 0 < first.pop("rtt_ms") < 1000  # within the default --wait of 1 s
    assert first == {"hop": 1, "from": ROUTER, "answer": "time-exceeded", "ttl": 64,
                     "icmp_code": 0}
    # The server never saw a probe for :22 (the router answered them all), and
    # answered every one for :80 that reached it.
    assert not matching(lines, kind="packet", hook="tc-ingress", proto="tcp", dport=22)
    syns_80 = matching(lines, kind="packet", hook="tc-ingress", proto="tcp", dport=80,
                       tcp_flags="S")
    assert len(syns_80) == web["probes"] - 1  # all but the TTL-1 probe get there


def test_udp_stops_after_the_router_while_icmp_and_tcp_reach_the_server(path_lab, watch):
    server_watch = watch("--port", "53", "--port", "80", host="server")
    found = results(probe(path_lab, "--port", "53/udp", "--port", "80/tcp"))
    lines = server_watch.stop()

    dns = found[("udp", 53)]
    assert dns["answer"] == "none" and dns["answered_by"] == "unknown"
    assert dns["last_hop"] == 1 and dns["last_hop_from"] == ROUTER
    assert [h["answer"] for h in dns["hops"][1:]] == [None] * (len(dns["hops"]) - 1)
    # No other UDP port reaches the server: the conclusion names what does.
    assert dns["conclusion"].rsplit("; ", 1)[1] in (f"ICMP, TCP :80 get through to {SERVER}",
                                                    f"TCP :80, ICMP get through to {SERVER}")
    assert found[("icmp", None)]["answer"] == "echo-reply"
    assert found[("icmp", None)]["answered_by"] == "target"
    assert found[("tcp", 80)]["answered_by"] == "target"
    # Seen from the server, the UDP probes never arrive: the router dropped them.
    assert not matching(lines, kind="packet", hook="tc-ingress", proto="udp", dport=53)


def test_servers_own_firewall_ends_the_path_at_its_hop(path_lab, watch):
    server_watch = watch("--port", "8080", host="server")
    found = results(probe(path_lab, "--port", "8080/tcp", "--port", "80/tcp", "--proto", "tcp"))
    lines = server_watch.stop()

    blocked = found[("tcp", 8080)]
    assert blocked["answer"] == "none"
    assert blocked["last_hop"] == 1 and blocked["target_hops"] == 2  # the next hop is the server
    assert "TCP :80 gets through to 10.0.2.2, so TCP :8080 alone is filtered" in \
        blocked["conclusion"]
    # The server's side of the same probes: they arrive, and its firewall drops them.
    syns = matching(lines, kind="packet", hook="tc-ingress", proto="tcp", dport=8080, tcp_flags="S")
    drops = matching(lines, kind="packet", hook="drop", proto="tcp", dport=8080,
                     reason="NETFILTER_DROP")
    assert len(syns) == len(drops) == blocked["probes"] - 1


def test_probes_dropped_on_this_host_name_the_output_rule(path_lab):
    rule = "OUTPUT -p udp --dport 5353 -j DROP"
    path_lab.sh("client", f"iptables -I {rule}")
    try:
        found = results(probe(path_lab, "--port", "5353/udp", "--proto", "udp"))
    finally:
        path_lab.sh("client", f"iptables -D {rule}")
    blocked = found[("udp", 5353)]["blocked_here"]
    assert blocked["error"] == "Operation not permitted"
    assert blocked["drop_reason"] == "NETFILTER_DROP"  # BPF saw the kernel drop them
    assert blocked["rules"] == ["iptables -t filter -A OUTPUT -p udp -m udp --dport 5353 -j DROP"]


# The OUTPUT chain of a host that lets only TCP 443 out: ICMP and UDP probes are both
# dropped here, and each must name its own rule, not the first that moved.
OUTPUT_443 = ("-p tcp -m tcp --dport 443 -j ACCEPT", "-p icmp -j DROP", "-p udp -j DROP")


@pytest.fixture
def only_443_out(path_lab):
    for rule in OUTPUT_443:
        path_lab.sh("client", f"iptables -A OUTPUT {rule}")
    try:
        yield [f"iptables -t filter -A OUTPUT {rule}" for rule in OUTPUT_443]
    finally:
        for rule in OUTPUT_443:
            path_lab.sh("client", f"iptables -D OUTPUT {rule}", check=False)


def test_each_protocol_blocked_here_names_only_its_own_rule(path_lab, only_443_out):
    _, icmp_rule, udp_rule = only_443_out
    found = results(probe(path_lab, "--port", "443"))
    udp, icmp, tcp = found[("udp", 443)], found[("icmp", None)], found[("tcp", 443)]
    assert udp["blocked_here"]["rules"] == [udp_rule]
    assert icmp["blocked_here"]["rules"] == [icmp_rule]
    assert udp["blocked_here"]["rules_unclear"] == icmp["blocked_here"]["rules_unclear"] == []
    assert tcp["blocked_here"] is None and tcp["answer"] == "rst"  # nothing listens on 443
    assert udp["conclusion"].endswith(f"the rule: {udp_rule}")
    assert icmp["conclusion"].endswith(f"the rule: {icmp_rule}")

    text = probe(path_lab, "--port", "443", json_out=False).stdout
    # One block per protocol (blank lines between), words rejoined across wrapped lines.
    blocks = {block.split()[0]: " ".join(block.split()) for block in text.split("\n\n")[1:]}
    udp_part, icmp_part = blocks["UDP"], blocks["ICMP"]
    assert "-p udp -j DROP" in udp_part and "-p icmp" not in udp_part
    assert "-p icmp -j DROP" in icmp_part and "-p udp" not in icmp_part


def test_native_nft_rules_are_named_by_their_own_match(path_lab):
    table = "pfprobe"  # a table of its own, deleted whatever happens
    path_lab.sh("client", f"nft add table inet {table} && nft add chain inet {table} output "
                          "'{ type filter hook output priority 0; }' && "
                          f"nft add rule inet {table} output meta l4proto udp counter drop && "
                          f"nft add rule inet {table} output meta l4proto icmp counter drop")
    try:
        found = results(probe(path_lab, "--port", "443"))
    finally:
        path_lab.sh("client", f"nft delete table inet {table}", check=False)
    rule = f"nft table inet {table} chain output: meta l4proto {{}} drop"
    assert found[("udp", 443)]["blocked_here"]["rules"] == [rule.format("udp")]
    assert found[("icmp", None)]["blocked_here"]["rules"] == [rule.format("icmp")]


def test_watch_names_each_drop_rule_under_its_own_flow(path_lab, watch):
    # The scenario's server drops TCP :8080; a second rule drops :8081.
    path_lab.sh("server", "iptables -I INPUT -p tcp --dport 8081 -j DROP")
    try:
        server_watch = watch("--port", "8080", "--port", "8081")
        for port in (8080, 8081):
            path_lab.sh("client", f"curl -sS -m 2 http://{SERVER}:{port}/", check=False)
        lines = server_watch.stop()
    finally:
        path_lab.sh("server", "iptables -D INPUT -p tcp --dport 8081 -j DROP")
    findings = {f["summary"].split(" to :")[1][:4]: f for f in diagnosis(lines)
                if f["cause"] == "firewall-drop"}
    assert sorted(findings) == ["8080", "8081"]
    for port, other in (("8080", "8081"), ("8081", "8080")):
        said = "\n".join(findings[port]["evidence"] + findings[port]["fix"])
        assert f"--dport {port} -j DROP" in said and f"--dport {other}" not in said


# ---------------------------------------------------------------- IPv6


def test_ipv6_forged_rst_is_traced_to_the_router_while_80_reaches_the_server(path_lab, watch):
    server_watch = watch("--port", "22", "--port", "80", host="server")
    found = results(probe(path_lab, "--port", "22/tcp", "--port", "80/tcp", "--proto", "tcp",
                          target=SERVER6), SERVER6)
    lines = server_watch.stop()

    rst = found[("tcp", 22)]
    assert rst["answer"] == "rst" and rst["answer_from"] == SERVER6  # ip6tables' forgery
    assert rst["answer_ttl"] == 64 and rst["answer_hops"] == 1 and rst["target_hops"] == 2
    assert rst["answered_by"] == "path" and rst["origin"] == ROUTER6
    assert f"the device at hop 1 ({ROUTER6})" in rst["conclusion"]
    assert "hop limit 64" in rst["conclusion"]
    web = found[("tcp", 80)]
    assert web["answer"] == "syn-ack" and web["answered_by"] == "target"
    assert web["hops"][0]["from"] == ROUTER6 and web["hops"][0]["answer"] == "time-exceeded"
    assert not matching(lines, kind="packet", hook="tc-ingress", proto="tcp", dport=22)
    syns_80 = matching(lines, kind="packet", hook="tc-ingress", family=6, proto="tcp", dport=80,
                       tcp_flags="S")
    assert len(syns_80) == web["probes"] - 1  # all but the hop-limit-1 probe get there


def test_ipv6_udp_stops_after_the_router_while_icmpv6_and_tcp_reach_the_server(path_lab, watch):
    server_watch = watch("--port", "53", "--port", "80", host="server")
    found = results(probe(path_lab, "--port", "53/udp", "--port", "80/tcp", target=SERVER6),
                    SERVER6)
    lines = server_watch.stop()

    dns = found[("udp", 53)]
    assert dns["answer"] == "none" and dns["last_hop"] == 1 and dns["last_hop_from"] == ROUTER6
    echo = found[("icmp", None)]
    assert echo["answer"] == "echo-reply" and echo["answered_by"] == "target"
    assert echo["answer_hops"] == echo["target_hops"] == 2
    assert found[("tcp", 80)]["answered_by"] == "target"
    assert "TCP :80, ICMPv6 get through to fd00:2::2" in dns["conclusion"]
    assert not matching(lines, kind="packet", hook="tc-ingress", proto="udp", dport=53)
    assert matching(lines, kind="packet", hook="tc-ingress", family=6, proto="icmpv6",
                    icmp_type=128)


def test_human_report_reads_as_conclusions(path_lab):
    proc = probe(path_lab, "--port", "22/tcp", "--port", "80/tcp", json_out=False)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert max(map(len, text.splitlines())) < 100
    assert "10.0.2.2 is hop 2 (from its echo replies)" in text
    assert "=> The RST for TCP :22 claims to come from 10.0.2.2 but arrived with TTL 64" in text
    assert "=> TCP :80 reaches 10.0.2.2 (hop 2): open." in text


def test_bad_input_and_no_root_fail_in_one_line(path_lab, as_nobody):
    for args in (["--port", "80/sctp"], ["--max-hops", "0", "--port", "80"], []):
        proc = probe(path_lab, *args, json_out=False)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, args
    argv = [*as_nobody, "probe", SERVER, "--port", "80"]
    proc = subprocess.run(path_lab.exec_argv("client", argv), capture_output=True, text=True,
                          cwd="/")
    assert proc.returncode == 2 and "needs root" in proc.stderr
