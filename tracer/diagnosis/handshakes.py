"""Rules about requests this host answered, or could not queue, whose
connections still did not work: the answers lost on the way back, a full SYN
queue, a path-MTU black hole. None of these leaves a drop event on this host:
they rest on what it sent, what came back, and the kernel's counters."""

from __future__ import annotations

from ..correlate.correlator import Flow
from ..model.kinds import Fate
from ..model.protocols import TOO_BIG, Proto
from .causes import Cause
from .context import next_hop_lines, queue_lines
from .evidence import Evidence, Finding, attempts, incomplete
from .wording import arrivals, contrast, counter_evidence, flow_ref, icmp_of, port_text

LARGE = 1200  # IP length from which a lost segment points to the path's MTU
ANSWERS_LOST = Cause("answers-lost", 72, "SYNs arrive and SYN-ACKs leave, but the peer keeps "
                     "retrying and never acknowledges: the answers die on the way back",
                     explains_unanswered=True)
SYN_QUEUE_FULL = Cause("syn-queue-full", 78, "the listener's SYN queue is full (a SYN flood, "
                       "syncookies off): new SYNs are discarded without a trace",
                       explains_unanswered=True)
PMTU_BLACKHOLE = Cause("pmtu-blackhole", 74, "connections open and small exchanges work, but "
                       "full-size segments are sent again and again, never acknowledged, and no "
                       "ICMP 'fragmentation needed' comes back", explains_unanswered=False)
CAUSES = (ANSWERS_LOST, SYN_QUEUE_FULL, PMTU_BLACKHOLE)


def rule_answers_lost(ev: Evidence) -> list[Finding]:
    findings = []
    for flow in ev.watched:
        lost = incomplete(flow)
        retried = flow.syn_retrans_in or flow.synack_retrans_out
        if flow.proto is not Proto.TCP or not lost or not retried or flow.acks_in or \
                flow.drops_out:  # dropped here, on the way out: another rule's
            continue
        finding = Finding(
            ANSWERS_LOST.id,
            f"SYNs from {flow.peer} to {port_text(flow)} arrive and this host answers them, but "
            f"{flow.peer} never acknowledges: the SYN-ACKs are lost on the way back "
            f"({lost}/{attempts(flow)} connections never completed).",
            flows=[flow_ref(flow, lost)], count=lost, confidence="medium")
        finding.evidence.append(
            f"{arrivals(flow)}; {flow.synack_out} SYN-ACKs sent"
            + (f" and {flow.synack_retrans_out} retransmissions of them"
               if flow.synack_retrans_out else "")
            + f"; the peer sent its SYNs {flow.syn_retrans_in} more times and no ACK")
        finding.evidence += counter_evidence(ev, ANSWERS_LOST.counters)
        finding.evidence += next_hop_lines(ev, flow.peer)
        finding.evidence += _echo_story(ev, flow)
        finding.fix = [
            f"follow the way back: ip route get {flow.peer} (next hop, interface), then "
            "ip neigh show for that next hop: a wrong or PERMANENT MAC address loses "
            "everything sent through it",
            "an asymmetric route (answers leave by another link than the one the SYNs "
            "came in on) or an egress filter on the path also does this",
            f"run pktfate watch on the next hop toward {flow.peer}: it shows where the "
            "SYN-ACKs stop",
        ]
        findings.append(finding)
    return findings


def _echo_story(ev: Evidence, flow: Flow) -> list[str]:
    icmp = ev.icmp_with(flow.peer)
    if icmp is None or not icmp.echo_requests_in:
        return []
    return [f"ICMP echo from {flow.peer}: {icmp.echo_requests_in} requests in, "
            f"{icmp.echo_replies_out} replies sent; if the peer saw no reply, they are lost "
            "on the same way back"]


def rule_syn_queue_full(ev: Evidence) -> list[Finding]:
    dropped = ev.counters.get("TcpExtTCPReqQFullDrop", 0)
    if not dropped:
        return []
    flows = [f for f in ev.watched if f.proto is Proto.TCP and f.syn_in]
    port = flows[0].local_port if flows else (ev.ports[0] if ev.ports else "?")
    unanswered = sum(f.syn_fates.get(Fate.UNANSWERED, 0) for f in flows)
    finding = Finding(
        SYN_QUEUE_FULL.id,
        f"The SYN queue of the listener on :{port} is full and syncookies are off: the kernel "
        f"discarded {dropped} SYNs without answering and without a drop reason.",
        flows=[flow_ref(f, f.syn_fates.get(Fate.UNANSWERED, 0)) for f in flows],
        count=max(dropped, unanswered))
    finding.evidence += counter_evidence(ev, ("TcpExtTCPReqQFullDrop", "TcpExtListenDrops"))
    for flooder in sorted(flows, key=lambda f: -f.syn_in)[:2]:
        if flooder.syn_in and not flooder.acks_in:
            finding.evidence.append(
                f"{flooder.peer} sent {flooder.syn_in} SYNs and completed no handshake: "
                "half-open connections that fill the queue")
    for flow in flows:
        if flow.syn_fates.get(Fate.UNANSWERED) and flow.acks_in == 0 and flow.syn_retrans_in:
            finding.evidence.append(f"{flow.peer}: {flow.syn_fates[Fate.UNANSWERED]} SYNs "
                                    "unanswered, retried by the peer")
    finding.evidence += queue_lines(ev, port)
    finding.fix = [
        "turn syncookies on: sysctl -w net.ipv4.tcp_syncookies=1 (the default, 1, uses them "
        "only when the queue is full)",
        "raise the queue: the listen() backlog of the service, net.core.somaxconn and "
        "net.ipv4.tcp_max_syn_backlog",
        "stop the flood at its source or upstream (the addresses above)",
        f"see the half-open connections: ss -tn state syn-recv 'sport = :{port}' | wc -l",
    ]
    return [finding]


def rule_pmtu_blackhole(ev: Evidence) -> list[Finding]:
    findings = []
    for flow in ev.watched:
        large = sum(n for length, n in flow.retrans_out_lengths.items() if int(length) >= LARGE)
        told = flow.errors_in.keys()
        if flow.proto is not Proto.TCP or not flow.completed or large < 2 or \
                any(e.icmp == TOO_BIG[icmp_of(flow)] for e in told):
            continue
        sizes = sorted({int(n) for n in flow.retrans_out_lengths if int(n) >= LARGE})
        finding = Finding(
            PMTU_BLACKHOLE.id,
            f"Connections from {flow.peer} to {port_text(flow)} open, but this host's full-size "
            f"segments ({', '.join(map(str, sizes))} bytes) never get through: they are sent "
            f"again {large} times and no ICMP 'fragmentation needed' comes back (a path-MTU "
            "black hole).", flows=[flow_ref(flow, large)], count=large, confidence="medium")
        finding.evidence.append(f"{flow.completed} connections completed their handshake; "
                                f"{flow.acks_in} ACKs came back for the smaller segments")
        finding.evidence.append(f"{large} retransmissions of segments of {sizes[0]} bytes or "
                                "more; none acknowledged")
        finding.evidence.append("no ICMP 'fragmentation needed' (or ICMPv6 'packet too big') "
                                "arrived: a link on the way has a smaller MTU and its "
                                "router's ICMP errors are filtered")
        finding.evidence += counter_evidence(ev, PMTU_BLACKHOLE.counters)
        finding.evidence += contrast(ev, flow, "opens, then stalls")
        finding.fix = [
            f"find the link: tracepath {flow.peer} (or ping -M do -s 1472 {flow.peer}, lowering "
            "the size until it passes)",
            "let ICMP type 3 code 4 (IPv6: type 2) through every firewall on the path",
            "or clamp TCP's MSS on the router before the small link: iptables -t mangle -A "
            "FORWARD -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu",
            "or let this host find the MTU itself: sysctl -w net.ipv4.tcp_mtu_probing=1",
        ]
        findings.append(finding)
    return findings
