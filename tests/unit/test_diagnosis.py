"""Diagnosis rules on recorded evidence: no root, no kernel."""

import io
import json

from pktfate.model.kinds import CsumVerdict, Hook
from pktfate.model.protocols import Proto
from pktfate.watch import run_explain

from .recorded import CLIENT, SERVER, Recorder, event_json


def _causes(findings):
    return [f.cause for f in findings]


def test_checksum_incident():
    rec = Recorder()
    rec.ping(3)
    rec.syn(6, tcp_bad_csum={}, drop={"reason": "TCP_CSUM", "location": "tcp_v4_rcv+0x1a"})
    rec.events = [ev._replace(checksum=CsumVerdict.PSEUDO)
                  if ev.hook is Hook.XDP and ev.proto is Proto.TCP else ev for ev in rec.events]
    findings = rec.findings(counters={"TcpInCsumErrors": 6})
    top = findings[0]
    assert top.cause == "tcp-bad-checksum"
    assert top.count == 6
    text = "\n".join(top.evidence)
    assert "6 dropped in tcp_v4_rcv with reason TCP_CSUM" in text
    assert "pseudo-header sum" in text
    assert f"ICMP echo from {CLIENT} answered 3/3" in text
    assert "TcpInCsumErrors +6" in text
    assert any("ethtool -K" in fix for fix in top.fix)
    assert "healthy" not in _causes(findings)


def test_no_listener():
    rec = Recorder()
    rec.syn(2, rst_sent={}, drop={"reason": "NO_SOCKET", "location": "tcp_v4_rcv+0x9"})
    findings = rec.findings()
    assert _causes(findings) == ["no-listener"]
    assert "answered 2 TCP SYNs" in findings[0].summary


def test_firewall_drop_counts_exactly():
    rec = Recorder()
    rec.syn(23, drop={"reason": "NETFILTER_DROP", "location": "nf_hook_slow+0x44"})
    findings = rec.findings()
    assert findings[0].cause == "firewall-drop"
    assert findings[0].count == 23
    assert findings[0].flows[0].count == 23


def test_firewall_reject_is_told_from_no_listener():
    rec = Recorder()
    for i in range(3):
        ident = {"ip_id": 10 + i, "seq": 50 + i, "sport": 41000 + i}
        rec.add(hook="xdp", **ident)
        rec.add(hook="tc-egress", src=SERVER, dst=CLIENT, sport=80, dport=41000 + i,
                tcp_flags="RA", seq=0, ack=51 + i, ip_id=0)
        rec.add(hook="drop", reason="NETFILTER_DROP", location="nf_hook_slow+0x1", skb="0x1",
                **ident)
    findings = rec.findings()
    assert _causes(findings) == ["firewall-reject"]


def test_healthy_ignores_teardown_frees():
    rec = Recorder()
    rec.ping(2)
    rec.add(hook="xdp")
    rec.add(hook="tc-egress", src=SERVER, dst=CLIENT, sport=80, dport=40000, tcp_flags="SA",
            seq=9, ack=101, ip_id=0)
    rec.add(hook="tcp-state", src=SERVER, dst=CLIENT, sport=80, dport=40000,
            state="SYN_RECV>ESTABLISHED", tcp_flags=None)
    rec.add(hook="drop", reason="QUEUE_PURGE", tcp_flags="A", ip_id=77, seq=101)
    findings = rec.findings()
    assert _causes(findings) == ["healthy"]
    assert "SYNs answered 1/1" in findings[0].summary


def test_listen_overflow_from_counters_alone():
    rec = Recorder()
    rec.syn(2)
    findings = rec.findings(counters={"TcpExtListenOverflows": 5})
    assert findings[0].cause == "listen-overflow"


def test_rp_filter():
    rec = Recorder()
    rec.syn(1, drop={"reason": "IP_RPFILTER", "location": "ip_rcv_finish_core+0x2"})
    findings = rec.findings()
    assert findings[0].cause == "rp-filter"
    assert any("rp_filter" in fix for fix in findings[0].fix)


def test_never_arrived_when_only_icmp_came():
    rec = Recorder()
    rec.ping(2)
    findings = rec.findings()
    assert _causes(findings) == ["never-arrived"]
    assert "did arrive" in findings[0].evidence[0]


def test_unknown_reason_still_reported():
    rec = Recorder()
    rec.syn(4, drop={"reason": "SOME_NEW_REASON", "location": "f+0x1"})
    findings = rec.findings()
    assert findings[0].cause == "unknown"
    assert "SOME_NEW_REASON x4" in findings[0].summary


def test_explain_replays_a_recording():
    rec = Recorder()
    rec.ping(3)
    rec.syn(6, drop={"reason": "TCP_CSUM", "location": "tcp_v4_rcv+0x1a"})
    lines = [json.dumps({"kind": "start", "local_addrs": [SERVER], "ports": [80]})]
    lines += [json.dumps(event_json(ev)) for ev in rec.events]
    lines.append(json.dumps({"kind": "counters", "delta": {"TcpInCsumErrors": 6}}))
    out = io.StringIO()
    recording = io.BytesIO("".join(line + "\n" for line in lines).encode())
    assert run_explain(recording, out, json_out=True) == 0
    diagnosis = json.loads(out.getvalue().splitlines()[-1])
    assert diagnosis["kind"] == "diagnosis"
    live = rec.findings(counters={"TcpInCsumErrors": 6})
    assert [f["cause"] for f in diagnosis["findings"]] == [f.cause for f in live]
    assert diagnosis["findings"][0]["evidence"] == live[0].evidence


import pytest  # noqa: E402

from pktfate.diagnosis.tables import drop_reasons  # noqa: E402

NAMED = sorted(r.name for r in drop_reasons().values() if not r.normal)


@pytest.mark.parametrize("reason", NAMED)
def test_every_known_reason_gives_its_tables_cause(reason):
    rec = Recorder()
    rec.syn(2, drop={"reason": reason, "location": "somewhere+0x1"})
    findings = rec.findings()
    assert findings[0].cause == drop_reasons()[reason].cause
    assert findings[0].count == 2
    assert "healthy" not in [f.cause for f in findings]
    assert not any(token in " ".join(findings[0].fix) for token in ("IFACE", "PORT"))


def test_firewall_rule_is_named_when_its_counter_moved():
    rec = Recorder()
    rec.syn(4, drop={"reason": "NETFILTER_DROP", "location": "nf_hook_slow+0x44"})
    rule = "iptables -t filter -A INPUT -p tcp -m tcp --dport 80 -j DROP"
    findings = rec.findings(firewall=[{"rule": rule, "packets": 4, "verdict": "DROP"}])
    assert f"matched 4 packets during the watch: {rule}" in "\n".join(findings[0].evidence)
    assert findings[0].fix[0].endswith(rule.replace(" -A ", " -D "))


def test_each_flow_names_only_the_rule_that_matches_it():
    rec = Recorder()
    for n, port in enumerate((8080, 8081)):
        for i in range(3):
            ident = {"ip_id": 100 + 10 * n + i, "seq": 1000 + 10 * n + i, "sport": 40000 + n,
                     "dport": port}
            rec.add(hook="xdp", **ident)
            rec.add(hook="drop", skb="0x1", reason="NETFILTER_DROP",
                    location="nf_hook_slow+0x44", **ident)
    rules = {port: f"iptables -t filter -A INPUT -p tcp -m tcp --dport {port} -j DROP"
             for port in (8080, 8081)}
    findings = rec.findings(ports=(8080, 8081), firewall=[
        {"rule": rule, "packets": 3, "verdict": "DROP"} for rule in rules.values()])
    assert [f.cause for f in findings[:2]] == ["firewall-drop"] * 2
    for finding in findings[:2]:
        port = 8080 if ":8080" in finding.summary else 8081
        other = rules[8081 if port == 8080 else 8080]
        text = "\n".join(finding.evidence + finding.fix)
        assert rules[port] in text and other not in text
        assert finding.fix[0].endswith(rules[port].replace(" -A ", " -D "))


def test_local_offload_adds_a_fix_for_this_host():
    rec = Recorder()
    rec.syn(2, drop={"reason": "TCP_CSUM", "location": "tcp_v4_rcv+0x1a"})
    with_offload = rec.findings(offload={"eth0": True})[0]
    assert "here as well, until the device is fixed: ethtool -K eth0 tx off" in with_offload.fix
    without = rec.findings(offload={"eth0": False})[0]
    assert not any("here as well" in fix for fix in without.fix)


def test_no_route_back_from_unanswered_syns_and_the_counter():
    rec = Recorder()
    rec.syn(2)  # arrived, neither answered nor dropped
    findings = rec.findings(counters={"IpOutNoRoutes": 2, "TcpExtListenDrops": 2},
                            routes={CLIENT: {"rp_filter": {"all": 0}}})
    assert [f.cause for f in findings] == ["no-route"]
    assert "ip route get 10.0.1.2: no route" in findings[0].evidence


def test_listen_drops_alone_are_not_an_overflow():
    rec = Recorder()
    rec.syn(2)
    assert "listen-overflow" not in [f.cause for f in
                                     rec.findings(counters={"TcpExtListenDrops": 2})]


@pytest.mark.parametrize(("func", "cause"), [("do_xdp_generic", "xdp-drop"),
                                         ("nf_hook_slow", "firewall-drop"),
                                         ("sch_handle_ingress", "tc-drop")])
def test_unnamed_drops_are_named_by_their_place(func, cause):
    rec = Recorder()
    rec.syn(3, drop={"reason": "NOT_SPECIFIED", "location": f"{func}+0x284", "iface": "eth0"})
    top = rec.findings()[0]
    assert top.cause == cause
    assert top.count == 3
    assert top.confidence == "medium"
    assert f"the kernel gave no reason (NOT_SPECIFIED); freed in {func}" in \
        "\n".join(top.evidence)
    if cause == "xdp-drop":
        assert f"dropped in {func} (XDP, inferred below)" in top.evidence[0]
        assert "ip -d link show eth0" in top.fix[0]


# A kernel before 5.17 names no drop reason: the event's reason is null and the
# function that freed the packet, the counters and pktfate's own checks tell it.
OLD_KERNEL_DROPS = [
    # (location, counters, checksum at arrival, RSTs sent back, expected top cause)
    ("tcp_v4_rcv+0x9f0", {"TcpInCsumErrors": 3}, "pseudo-header-only", False,
     "tcp-bad-checksum"),
    ("tcp_v4_rcv+0x9f0", {}, "bad", False, "tcp-bad-checksum"),  # pktfate verified it
    ("tcp_v4_rcv+0x9f0", {"TcpOutRsts": 3}, "good", True, "no-listener"),
    ("nf_hook_slow+0x90", {}, "good", False, "firewall-drop"),
]


@pytest.mark.parametrize(("location", "counters", "checksum", "reset", "cause"),
                         OLD_KERNEL_DROPS)
def test_drops_without_reasons_are_named_by_place_and_counters(location, counters, checksum,
                                                                reset, cause):
    rec = Recorder()
    for i in range(3):
        ident = {"ip_id": 100 + i, "seq": 1000 + i * 7, "sport": 40000}
        rec.add(hook="xdp", checksum=checksum, **ident)
        rec.add(hook="drop", skb="0x1", reason=None, location=location, **ident)
        if reset:
            rec.add(hook="tc-egress", src=SERVER, dst=CLIENT, sport=80, dport=40000,
                    tcp_flags="RA", ip_id=0, seq=0, ack=1001 + i * 7)
    findings = rec.findings(counters=counters)
    top = findings[0]
    assert top.cause == cause, [(f.cause, f.summary) for f in findings]
    assert top.confidence == "medium" and top.count == 3
    said = "\n".join(top.evidence)
    assert "this kernel names no drop reasons (before 5.17); freed in " + \
        location.split("+")[0] in said
    assert "healthy" not in [f.cause for f in findings]
    assert not any("dropreason" in line for f in findings for line in f.evidence + f.fix)


def test_a_pseudo_header_checksum_alone_does_not_name_a_checksum_drop():
    # A local sender's offload leaves that on a veth too, and the kernel accepts it;
    # and a newer kernel's NOT_SPECIFIED in tcp_v4_rcv is not a checksum drop (it
    # would have said TCP_CSUM).
    for reason in (None, "NOT_SPECIFIED"):
        rec = Recorder()
        for i in range(2):
            ident = {"ip_id": 100 + i, "seq": 1000 + i * 7, "sport": 40000}
            rec.add(hook="xdp", checksum="pseudo-header-only", **ident)
            rec.add(hook="drop", skb="0x1", reason=reason, location="tcp_v4_rcv+0x9f0",
                    **ident)
        causes = [f.cause for f in rec.findings()]
        assert "tcp-bad-checksum" not in causes and "healthy" not in causes, (reason, causes)


def test_a_drop_without_reason_or_known_place_stays_unknown_and_says_where():
    rec = Recorder()
    rec.syn(2, drop={"reason": None, "location": "some_new_function+0x10"})
    findings = rec.findings()
    assert findings[0].cause == "unknown"  # the cause the registry declares (CAUSES)
    said = "\n".join(findings[0].evidence + findings[0].fix + [findings[0].summary])
    assert "some_new_function" in said
    assert "dropreason" not in said  # no advice pointing at a file this kernel lacks


def _router(answered: bool) -> list:
    """Two connections through a router (10.0.1.1 / 10.0.2.1): SYNs in on eth-c and
    on out eth-s; with `answered`, the server's SYN-ACKs back the other way and the
    client's ACKs on after them."""
    from pktfate.correlate.correlator import Correlator
    from pktfate.diagnosis.diagnose import diagnose
    from pktfate.diagnosis.evidence import Evidence

    rec = Recorder()
    for i in range(2):
        ident = {"ip_id": 30 + i, "seq": 300 + i, "sport": 40000 + i}
        rec.add(hook="xdp", iface="eth-c", **ident)
        rec.add(hook="tc-egress", iface="eth-s", **ident)
        if answered:
            back = {"src": SERVER, "dst": CLIENT, "sport": 80, "dport": 40000 + i,
                    "tcp_flags": "SA", "seq": 900 + i, "ack": 301 + i, "ip_id": 0}
            rec.add(hook="xdp", iface="eth-s", **back)
            rec.add(hook="tc-egress", iface="eth-c", **back)
            on = {**ident, "tcp_flags": "A", "seq": 301 + i, "ack": 901 + i, "ip_id": 40 + i}
            rec.add(hook="xdp", iface="eth-c", **on)
            rec.add(hook="tc-egress", iface="eth-s", **on)
    correlator = Correlator({"10.0.1.1", "10.0.2.1"}, (80,))
    for ev in rec.events:
        correlator.feed(ev)
    return diagnose(Evidence(correlator.finish(), {}, (80,)))


def test_healthy_on_a_router_speaks_of_forwarding():
    findings = _router(answered=True)
    assert [f.cause for f in findings] == ["healthy"]
    assert "SYNs answered 2/2; 6 packets forwarded" in findings[0].summary


def test_forwarded_syns_whose_answers_never_came_back_are_not_healthy():
    # Forwarding is not answering: a router (or a port mapping) that passed SYNs on
    # and saw nothing come back must say so, never 'healthy'.
    findings = _router(answered=False)
    assert [f.cause for f in findings] == ["unanswered"]
    assert "2 were forwarded and no answer came back through this host" in findings[0].summary
