"""Following packets through NAT and reading the host's context, on recorded
evidence: no root, no kernel, nothing read from the host running the tests."""

import io
import json
from pathlib import Path

import pytest

from pktfate.correlate.correlator import Correlator, Rewrite
from pktfate.diagnosis.context import next_hop_lines, socket_filter_lines
from pktfate.diagnosis.diagnose import diagnose
from pktfate.diagnosis.evidence import Evidence
from pktfate.diagnosis.nat import nat_rules_for
from pktfate.host.firewall import parse_nat_rules, rule_match
from pktfate.host.sockets import cgroup2_mount, unit_of
from pktfate.model.kinds import NatKind
from pktfate.watch import run_explain

from .recorded import event as recorded_event
from .recorded import host_context

DATA = Path(__file__).resolve().parents[1] / "data"
LOCAL, PEER, BACKEND = "10.0.2.2", "10.0.1.2", "172.30.0.2"


def event(hook, src=PEER, dst=LOCAL, dport=8100, skb="0xffff1", tracked=False, **kw):
    fields = dict(ts=1.0, hook=hook, iface="eth0", netns=1, family=4, proto="tcp", src=src,
                  dst=dst, sport=40000, dport=dport, length=60, ttl=63, ip_id=7,
                  tcp_flags="S", seq=1000, ack=0, icmp_type=None, icmp_code=None, reason=None,
                  location=None, state=None, checksum=None, csum_field=None, skb=skb,
                  tracked=tracked)
    fields.update(kw)
    return recorded_event(**fields)


def dnat_drop(reason="IP_INADDRERRORS", location="ip_error+0x5c", dst=BACKEND):
    return event("drop", dst=dst, dport=80, tracked=True, reason=reason, location=location)


def test_a_tracked_drop_after_dnat_belongs_to_the_original_flow():
    c = Correlator({LOCAL}, (8100,))
    c.feed(event("tc-ingress"))
    c.feed(dnat_drop())
    (flow,) = c.finish()
    assert (flow.local_port, flow.syn_fates["dropped"]) == (8100, 1)
    assert flow.drops == {"IP_INADDRERRORS": 1}
    assert flow.rewrites == {Rewrite(NatKind.DNAT, BACKEND, 80): 1}


def test_an_untracked_event_with_a_reused_skb_address_is_not_taken_for_the_old_packet():
    c = Correlator({LOCAL}, (8100,))
    c.feed(event("tc-ingress"))
    c.feed(event("drop", src="10.9.9.9", dst=LOCAL, dport=8100, reason="NO_SOCKET",
                 location="tcp_v4_rcv+0x1"))  # same skb address, not tracked: its own packet
    flows = {f.peer: f for f in c.finish()}
    assert not flows[PEER].rewrites and not flows[PEER].drops


def test_a_tracked_packet_forwarded_to_the_backend_is_forwarded_then_answered():
    c = Correlator({LOCAL}, (8100,))
    c.feed(event("tc-ingress"))
    c.feed(event("tc-egress", dst=BACKEND, dport=80, tracked=True, iface="ctr0"))
    c.feed(event("tc-egress", src=LOCAL, dst=PEER, sport=8100, dport=40000, tcp_flags="SA",
                 seq=5000, ack=1001, skb="0xffff2"))
    (flow,) = c.finish()
    assert (flow.forwarded, flow.syn_fates["answered"], flow.synack_out) == (1, 1, 1)


@pytest.mark.parametrize(("rule", "expected"), [
    ("iptables -t filter -A OUTPUT -p udp -m udp --dport 53 -j DROP",
     {"proto": "udp", "dport": "53", "target": "DROP"}),
    ("iptables -t filter -A INPUT ! -s 10.0.0.0/8 -i eth0 -j REJECT --reject-with tcp-reset",
     {"src": "!10.0.0.0/8", "iif": "eth0", "target": "REJECT"}),
    ("iptables -t nat -A PREROUTING -p tcp -m tcp --dport 8100 -j DNAT --to-destination "
     "172.30.0.2:80", {"proto": "tcp", "dport": "8100", "target": "DNAT",
                       "to": "172.30.0.2:80"}),
])
def test_a_rule_is_read_for_what_it_matches(rule, expected):
    assert rule_match(rule) == expected


NAT_SAVE = """*nat
:PREROUTING ACCEPT [0:0]
[3:180] -A PREROUTING -p tcp -m tcp --dport 8100 -j DNAT --to-destination 172.30.0.2:80
[0:0] -A PREROUTING -p tcp -m tcp --dport 8200 -j DNAT --to-destination 172.30.0.3:80
[9:540] -A POSTROUTING -s 172.30.0.0/24 -j MASQUERADE
COMMIT
"""


def _flow_with_rewrite():
    c = Correlator({LOCAL}, (8100,))
    c.feed(event("tc-ingress"))
    c.feed(dnat_drop())
    return c.finish()


def test_the_dnat_rule_named_is_the_one_whose_match_and_target_fit_the_rewrite():
    rules = parse_nat_rules(NAT_SAVE)
    assert [r["target"] for r in rules] == ["DNAT", "DNAT", "MASQUERADE"]
    (flow,) = _flow_with_rewrite()
    ev = Evidence([flow], ports=(8100,), host=host_context(nat=rules))
    named = nat_rules_for(ev, ev.flows[0], Rewrite(NatKind.DNAT, BACKEND, 80))
    assert named == ["iptables -t nat -A PREROUTING -p tcp -m tcp --dport 8100 -j DNAT "
                     "--to-destination 172.30.0.2:80"]


def test_forwarding_off_needs_the_setting_and_not_otherwise():
    flows = _flow_with_rewrite()
    off = diagnose(Evidence(flows, ports=(8100,), host=host_context(
        nat=parse_nat_rules(NAT_SAVE), sysctls={"net.ipv4.ip_forward": 0})))
    assert off[0].cause == "forwarding-off" and off[0].confidence == "high"
    assert any("--dport 8100 -j DNAT" in line for line in off[0].evidence)
    assert "healthy" not in [f.cause for f in off]
    on = diagnose(Evidence(_flow_with_rewrite(), ports=(8100,),
                           host=host_context(sysctls={"net.ipv4.ip_forward": 1})))
    assert "forwarding-off" not in [f.cause for f in on]
    assert on[0].cause == "not-for-this-host"  # what the table says of IP_INADDRERRORS


def test_a_dnat_target_nobody_answers_is_nat_backend_unreachable_with_its_neighbour():
    c = Correlator({LOCAL}, (8100,))
    c.feed(event("tc-ingress"))
    c.feed(dnat_drop("NEIGH_FAILED", "neigh_invalidate+0x7e", dst="172.30.0.9"))
    ev = Evidence(c.finish(), ports=(8100,), host=host_context(
        rewrite_routes={"172.30.0.9": {"oif": "ctr0", "gateway": None}},
        neighbours=[{"addr": "172.30.0.9", "iface": "ctr0", "state": "FAILED",
                     "lladdr": None, "for": ["172.30.0.9"]}]))
    findings = diagnose(ev)
    assert [f.cause for f in findings] == ["nat-backend-unreachable"]
    assert "neighbour entry for 172.30.0.9 on ctr0: FAILED: 172.30.0.9 does not answer " \
           "ARP/NDP" in findings[0].evidence


def test_a_permanent_next_hop_is_called_out():
    ev = Evidence([], host=host_context(
        routes={PEER: {"oif": "eth0", "gateway": "10.0.2.1"}},
        neighbours=[{"addr": "10.0.2.1", "iface": "eth0", "state": "PERMANENT",
                     "lladdr": "02:00:0a:00:02:77", "for": [PEER]}]))
    lines = next_hop_lines(ev, PEER)
    assert lines[0] == "route to 10.0.1.2: dev eth0 via 10.0.2.1"
    assert lines[1].startswith("neighbour entry for 10.0.2.1 on eth0: PERMANENT "
                               "(02:00:0a:00:02:77): a static entry")


def _listener(addr, programs=(), unit=None):
    return {"80": {"listening": 1, "accept_queue": 0, "half_open": 0, "sockets": [
        {"addr": addr, "accept_queue": 0, "backlog": 5, "processes": [
            {"pid": 42, "comm": "nginx", "cgroup": "/system.slice/nginx.service",
             "unit": unit, "cgroup_programs": list(programs)}]}]}}


def test_the_cgroup_program_and_unit_behind_a_socket_filter_are_named():
    prog = {"attach": "ingress", "id": 7, "name": "sd_fw_ingress"}
    ev = Evidence([], host=host_context(listeners=_listener("0.0.0.0", [prog],
                                                           unit="nginx.service")))

    class Flow:
        local_port = 80
    lines, fixes = socket_filter_lines(ev, Flow())
    assert "unit nginx.service, which runs BPF program sd_fw_ingress (id 7) on ingress" in \
        lines[0]
    assert fixes[0].startswith("systemctl show nginx.service -p IPAddressDeny")
    bare = Evidence([], host=host_context(listeners=_listener("0.0.0.0")))
    assert "the socket's own" in socket_filter_lines(bare, Flow())[0][0]


def test_units_are_read_from_cgroup_paths():
    assert unit_of("/system.slice/nginx.service") == "nginx.service"
    assert unit_of("/user.slice/user-0.slice/session-3.scope") == "session-3.scope"
    assert unit_of("/system.slice/docker-ab12.scope/app") == "docker-ab12.scope"
    assert unit_of("/pktfate-lab-80-13750") is None


def test_the_cgroup_hierarchy_is_found_in_mountinfo(tmp_path):
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "status").write_text("PPid:\t1\n")
    (tmp_path / "self" / "mountinfo").write_text(
        f"41 31 0:38 / {tmp_path} rw,relatime - cgroup2 cgroup2 rw\n")
    assert cgroup2_mount(tmp_path) == str(tmp_path)


@pytest.mark.parametrize(("recording", "cause"), [
    ("watch-forwarding-off.jsonl", "forwarding-off"),
    ("watch-localhost-only.jsonl", "localhost-only"),
])
def test_explain_on_another_host_gives_the_recorded_findings(recording, cause):
    """Recorded in the lab's server namespace; explained here, where none of its
    interfaces, sockets, rules or settings exist: only the recorded context counts."""
    text = (DATA / recording).read_text()
    recorded = json.loads(text.splitlines()[-1])["findings"]
    out = io.StringIO()
    run_explain(io.BytesIO(text.encode()), out, json_out=True)
    assert json.loads(out.getvalue().splitlines()[-1])["findings"] == recorded
    assert recorded[0]["cause"] == cause


@pytest.mark.parametrize(("recording", "said"), [
    # The server's socket closed with a segment still queued: freed in
    # sk_stream_kill_queues with no reason (newer kernels say QUEUE_PURGE).
    ("watch-5.10-healthy-queue-purge.jsonl", "QUEUE_PURGE inferred"),
    # The same over IPv6, where 5.10's icmpv6_rcv also frees each echo request it
    # answered with kfree_skb (newer kernels call consume_skb: no drop at all).
    ("watch-5.10-healthy-v6.jsonl", "QUEUE_PURGE inferred"),
])
def test_packets_that_served_their_purpose_are_no_drops_on_a_kernel_without_reasons(
        recording, said):
    """Recorded by the kernel matrix in Debian 11's 5.10 (the healthy scenarios): what
    that kernel frees without a reason at the end of a packet's normal life is not
    a cause: the verdict stays healthy."""
    findings = _explained((DATA / recording).read_text())
    assert [f["cause"] for f in findings] == ["healthy"]
    assert any(said in line for line in findings[0]["evidence"])


def _explained(text: str) -> list[dict]:
    out = io.StringIO()
    run_explain(io.BytesIO(text.encode()), out, json_out=True)
    return json.loads(out.getvalue().splitlines()[-1])["findings"]


def test_a_cgroup_filter_is_named_on_a_kernel_without_reasons_by_the_listeners_program():
    """Recorded by the kernel matrix in Debian 11's 5.10: the listener's cgroup runs
    an ingress program refusing every packet; the kernel frees the SYNs inside
    tcp_v4_rcv (tcp_filter()) with no reason. The program the context recorded is
    what names them; without it the drops stay unexplained."""
    text = (DATA / "watch-5.10-cgroup-filter.jsonl").read_text()
    findings = _explained(text)
    assert findings[0]["cause"] == "socket-filter"
    assert any("SOCKET_FILTER inferred" in line and "cgroup BPF program" in line
               for line in findings[0]["evidence"])
    assert any("deny_ingress" in line for line in findings[0]["evidence"])
    # The same watch where the listener's cgroup has no program: by elimination,
    # the socket's own filter (no counter of tcp_v4_rcv's other drops moved).
    lines = [json.loads(line) for line in text.splitlines()]
    for line in lines:
        for sock in line.get("listeners", {}).get("80", {}).get("sockets", []):
            for proc in sock["processes"]:
                proc["cgroup_programs"] = []
    findings = _explained("\n".join(map(json.dumps, lines)) + "\n")
    assert findings[0]["cause"] == "socket-filter"
    said = "\n".join(findings[0]["evidence"])
    assert "none of TcpInCsumErrors, TcpOutRsts" in said and "the socket's own" in said
    # ... unless one of those moved: then it is not named so.
    for line in lines:
        if line["kind"] == "counters":
            line["delta"]["TcpExtTCPBacklogDrop"] = 2
    causes = [f["cause"] for f in _explained("\n".join(map(json.dumps, lines)) + "\n")]
    assert "socket-filter" not in causes and causes[0].startswith("unknown")


@pytest.mark.parametrize(("recording", "cause", "said"), [
    ("watch-5.10-rp-filter.jsonl", "rp-filter",
     "freed in ip_rcv_finish_core.constprop.0; TcpExtIPReversePathFilter +5"),
    ("watch-5.10-socket-buffer-full.jsonl", "socket-buffer-full",
     "freed in udp_queue_rcv_one_skb; UdpRcvbufErrors +38"),
    ("watch-5.10-socket-filter.jsonl", "socket-filter", "1 socket(s) listening on the port"),
    ("watch-5.10-tcp-md5.jsonl", "tcp-md5", "TcpExtTCPMD5NotFound +2"),
    ("watch-5.10-ttl-expired.jsonl", "ttl-expired", "3 answered with ICMP time exceeded"),
    # freed by another tool's program in 5.10's generic XDP (do_xdp_generic later)
    ("watch-5.10-xdp-drop.jsonl", "xdp-drop", "freed in netif_receive_generic_xdp"),
    # the RST left before tcp_v4_rcv freed the SYN: TCP's own, not a REJECT's
    ("watch-5.10-localhost-only.jsonl", "localhost-only", "listening on 127.0.0.1:80"),
    # retransmitted SYNs freed in tcp_v4_rcv after one was answered: not a filter
    ("watch-5.10-answers-lost.jsonl", "answers-lost",
     "6 SYN-ACKs sent and 5 retransmissions of them"),
])
def test_drops_on_debian_11s_kernel_are_named_by_place_counters_and_context(recording, cause,
                                                                             said):
    """Recorded by the kernel matrix in Debian 11's 5.10, where each came out
    'unknown' (or, for ttl-expired, 'never-arrived': its time-exceeded errors were
    only seen leaving at tc egress, 5.10 having no icmp:icmp_send)."""
    findings = _explained((DATA / recording).read_text())
    assert findings[0]["cause"] == cause, [f["summary"] for f in findings]
    assert said  # an empty string is in any text: every case says what it wants
    assert said in "\n".join(findings[0]["evidence"] + [line for f in findings
                                                        for line in f["evidence"]])


def _flows(text: str) -> list[dict]:
    out = io.StringIO()
    run_explain(io.BytesIO(text.encode()), out, json_out=True)
    return [json.loads(line) for line in out.getvalue().splitlines()
            if json.loads(line)["kind"] == "flow"]


def test_a_router_without_drop_reasons_or_icmp_send_still_names_an_mtu_drop():
    """Recorded by the kernel matrix on the router, in Debian 11's 5.10: data segments
    too big for the 1280-byte link, DF set, freed in ip_forward with no reason while
    IpFragFails grew; 5.10 has no icmp:icmp_send, so the 'fragmentation needed'
    errors the router sent back are counted as tc egress saw them leave."""
    text = (DATA / "watch-5.10-mtu.jsonl").read_text()
    findings = _explained(text)
    assert findings[0]["cause"] == "mtu"
    assert any("PKT_TOO_BIG inferred" in line and "IpFragFails +3" in line
               for line in findings[0]["evidence"])
    tcp = next(f for f in _flows(text) if f["proto"] == "tcp")
    assert tcp["icmp_errors_sent"] == [{"type": 3, "code": 4, "count": 3}]
    # A kernel with the tracepoint counts them from it: the errors seen leaving are
    # then not counted a second time.
    start = json.loads(text.splitlines()[0])
    start["missing"].remove("tracepoint icmp/icmp_send")
    again = "\n".join([json.dumps(start)] + text.splitlines()[1:]) + "\n"
    tcp = next(f for f in _flows(again) if f["proto"] == "tcp")
    assert tcp["icmp_errors_sent"] == []
    # Without BTF no tracepoint is attached: the errors are counted as they leave.
    start["missing"].append("kernel BTF (not found): no drops, resets or socket states")
    again = "\n".join([json.dumps(start)] + text.splitlines()[1:]) + "\n"
    tcp = next(f for f in _flows(again) if f["proto"] == "tcp")
    assert tcp["icmp_errors_sent"] == [{"type": 3, "code": 4, "count": 3}]


def test_frames_for_another_hosts_mac_are_named_by_the_counters_that_did_not_move():
    """Recorded by the kernel matrix in Debian 11's 5.10: the forwarder sends to the
    server's old MAC address; 5.10's ip_rcv_core frees such frames before counting
    anything, while each of its other drops moves a counter. None moved: OTHERHOST.
    Where one did, it is not named so."""
    text = (DATA / "watch-5.10-not-for-this-host.jsonl").read_text()
    findings = _explained(text)
    assert {f["cause"] for f in findings} == {"not-for-this-host"}
    assert findings[0]["summary"].startswith("ICMP packets from 10.0.1.2")
    assert any("OTHERHOST inferred" in line and "none of IpInHdrErrors" in line
               for line in findings[0]["evidence"])
    lines = [json.loads(line) for line in text.splitlines()]
    for line in lines:
        if line["kind"] == "counters":
            line["delta"]["IpExtInTruncatedPkts"] = 5
    causes = [f["cause"] for f in _explained("\n".join(map(json.dumps, lines)) + "\n")]
    assert "not-for-this-host" not in causes
