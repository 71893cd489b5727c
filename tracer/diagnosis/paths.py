"""Paths and routes: what happened to the packets on their way here and to the
answers on their way back. Checksums a device on the way broke, a route back
that is missing or leaves by another interface, TTLs that ran out, packets that
never arrived, and answers a device on the path sent in the peer's name."""

from __future__ import annotations

from collections import Counter
from typing import Callable

from ..correlate.correlator import ErrorIn, Flow
from ..model.host import RouteInfo
from ..model.kinds import CsumVerdict, Fate
from ..model.protocols import ICMP_FAMILIES, TIME_EXCEEDED, Proto
from .causes import Cause, table_cause
from .evidence import Evidence, Finding
from .firewall import RP_FILTER
from .origin import forged_sentence, hop_of, ttl_story, usual_hop
from .tables import fill, reason_info
from .wording import (
    arrivals,
    contrast,
    counter_lines,
    dropped_line,
    flow_ref,
    icmp_of,
    iface_of,
    peer_port_text,
    port_text,
    proto_label,
    remote_class,
    ttls_text,
    what,
    where_dropped,
)

Rule = Callable[[Evidence], list[Finding]]
NO_ROUTE = table_cause("no-route").id  # the drop-reason table declares it
TTL_EXPIRED = Cause("ttl-expired", 65, "packets run out of TTL here: a routing loop or a TTL "
                    "set too low")
NEVER_ARRIVED = Cause("never-arrived", 60, "no watched packet reached this host: the problem "
                      "is upstream")
FORGED_RESET = Cause("forged-reset", 85, "RSTs in the peer's name come from a device on the "
                     "path")
FORGED_ICMP_ERROR = Cause("forged-icmp-error", 85, "ICMP errors in the peer's name come from a "
                          "device on the path")
REFUSED_ON_PATH = Cause("refused-on-path", 85, "a device on the path answers with an ICMP error")


def _checksum_rule(reason: str, cause: Cause, proto: Proto | None,
                   counters: tuple[str, ...]) -> Rule:
    def check(ev: Evidence) -> list[Finding]:
        findings = []
        for flow in ev.flows:
            dropped = flow.drops.get(reason, 0)
            if not dropped or (proto is not None and flow.proto is not proto):
                continue
            finding = Finding(
                cause.id,
                f"{what(flow)} from {flow.peer} to {port_text(flow) or flow.local} arrive but this "
                f"kernel drops them ({dropped}/{flow.packets_in}) because their "
                f"{proto_label(flow.proto) if proto else 'IP header'} checksum is wrong.",
                flows=[flow_ref(flow, dropped)], count=dropped)
            finding.evidence.append(dropped_line(flow, dropped, reason))
            offload = flow.checksums.get(CsumVerdict.PSEUDO, 0)
            if offload:
                finding.evidence.append(
                    f"{offload} arrived with only the pseudo-header sum in the checksum field: "
                    "the sender left the checksum to offload and nothing on the way completed it")
            if flow.bad_csum:
                finding.evidence.append(f"tcp:tcp_bad_csum fired {flow.bad_csum} times")
            if not (flow.synack_out or flow.rst_out or flow.icmp_errors_sent):
                finding.evidence.append("nothing was sent back: to the sender the port looks "
                                        "filtered (timeouts, no RST)")
            finding.evidence += counter_lines(ev, counters)
            finding.evidence += contrast(ev, flow, f"dropped {dropped}/{flow.packets_in} "
                                                   f"({reason})")
            finding.fix = [
                f"on the sender {flow.peer}: turn off transmit checksum offload on the interface "
                "that sends here: ethtool -K <iface> tx off",
                "or fix the device that forwards between them: it must complete the checksum "
                "(or recompute it) instead of copying the segment as it is",
            ]
            _local_offload(ev, flow, finding)
            finding.fix.append(f"then verify: nstat -az {counters[0]} stops growing and the "
                               "service answers")
            findings.append(finding)
        return findings

    check.__name__ = f"rule_{cause.id.replace('-', '_')}"
    return check


def _local_offload(ev: Evidence, flow: Flow, finding: Finding) -> None:
    """This host's own answers cross the same device: say if they would break too."""
    for iface in {a.iface for a in flow.arrived_on}:
        if iface and ev.offload.get(iface):
            finding.evidence.append(
                f"this host's {iface} also leaves transmit checksums to offload: its answers "
                "through the same device would arrive broken too")
            finding.fix.append(f"here as well, until the device is fixed: ethtool -K {iface} "
                               "tx off")
            return


TCP_BAD_CHECKSUM = Cause("tcp-bad-checksum", 90, "the kernel drops TCP segments whose "
                         "checksum is wrong (offload plus a forwarding device that does not "
                         "complete it)")
UDP_BAD_CHECKSUM = Cause("udp-bad-checksum", 90, "the kernel drops UDP datagrams whose checksum "
                         "is wrong")
IP_BAD_CHECKSUM = Cause("ip-bad-checksum", 90, "the kernel drops packets whose IPv4 header "
                        "checksum is wrong (a device rewrote the header without fixing it)")
rule_tcp_bad_checksum = _checksum_rule("TCP_CSUM", TCP_BAD_CHECKSUM, Proto.TCP,
                                       ("TcpInCsumErrors",))
rule_udp_bad_checksum = _checksum_rule("UDP_CSUM", UDP_BAD_CHECKSUM, Proto.UDP,
                                       ("UdpInCsumErrors",))
rule_ip_bad_checksum = _checksum_rule("IP_CSUM", IP_BAD_CHECKSUM, None, ("IpInHdrErrors",))


def rule_no_route_back(ev: Evidence) -> list[Finding]:
    """SYNs accepted but never answered, and the kernel counted output packets it
    could not route: the answer has nowhere to go."""
    no_routes = ev.counters.get("IpOutNoRoutes", 0)
    findings = []
    for flow in ev.watched:
        unanswered = flow.syn_fates.get(Fate.UNANSWERED, 0)
        if not unanswered or flow.drops or not (no_routes or flow.peer in ev.routes):
            continue
        route = ev.routes.get(flow.peer)
        if route is not None and route.oif:
            continue
        finding = Finding(
            NO_ROUTE,
            f"SYNs from {flow.peer} to {port_text(flow)} arrive, but this host has no route back "
            f"to {flow.peer}: no SYN-ACK can leave ({unanswered} unanswered).",
            flows=[flow_ref(flow, unanswered)], count=unanswered)
        finding.evidence.append(f"{arrivals(flow)}; {unanswered} SYNs neither answered nor "
                                "dropped")
        if route is not None:
            finding.evidence.append(f"ip route get {flow.peer}: no route")
        finding.evidence += counter_lines(ev, ("IpOutNoRoutes", "TcpExtListenDrops"))
        finding.evidence += contrast(ev, flow, f"unanswered {unanswered}/{flow.syn_in}")
        finding.fix = [f"add a route back: ip route add {flow.peer} via <gateway> (or a "
                       "default route: ip route add default via <gateway>)",
                       f"check: ip route get {flow.peer}"]
        findings.append(finding)
    return findings


def rule_rp_filter(ev: Evidence) -> list[Finding]:
    findings = []
    for flow in ev.flows:
        dropped = flow.drops.get("IP_RPFILTER", 0)
        if not dropped:
            continue
        iface = iface_of(flow)
        route = ev.routes.get(flow.peer) or RouteInfo()
        back = route.oif
        if back:
            why = f"the route back to {flow.peer} leaves through {back}, not {iface} where " \
                  "they arrive"
        elif flow.peer in ev.routes:
            why = f"this host has no route back to {flow.peer}"
        else:
            why = f"the route back to {flow.peer} does not leave through {iface}, where they " \
                  "arrive"
        finding = Finding(
            RP_FILTER.id, f"Reverse-path filtering drops packets from {flow.peer}: {why}.",
            flows=[flow_ref(flow, dropped)], count=dropped)
        finding.evidence.append(dropped_line(flow, dropped, "IP_RPFILTER"))
        settings = route.rp_filter
        if settings:
            finding.evidence.append("reverse-path filter settings (1 strict, 2 loose; the "
                                    "higher of 'all' and the interface's counts): " +
                                    ", ".join(f"net.ipv4.conf.{k}.rp_filter={v}"
                                              for k, v in settings.items()))
        finding.fix = [
            f"compare: ip route get {flow.peer} (the way back) with {iface} (the way in)",
            f"route {flow.peer} back through {iface}, or make the check loose: sysctl -w "
            f"net.ipv4.conf.{iface}.rp_filter=2 and net.ipv4.conf.all.rp_filter=2",
        ]
        findings.append(finding)
    return findings


def rule_ttl_expired(ev: Evidence) -> list[Finding]:
    findings = []
    for flow in ev.flows:
        expired = flow.icmp_errors_sent.get(TIME_EXCEEDED[icmp_of(flow)], 0)
        if expired:
            findings.append(Finding(
                TTL_EXPIRED.id, f"Packets from {flow.peer} ran out of TTL here ({expired}): "
                "a routing loop, or a sender's TTL set too low.",
                flows=[flow_ref(flow, expired)], count=expired, confidence="medium",
                evidence=[f"{expired} answered with ICMP time exceeded"],
                fix=[f"traceroute {flow.peer} from both sides, looking for a loop"]))
    return findings


def rule_never_arrived(ev: Evidence) -> list[Finding]:
    """Nothing reached the watched service here. Not said where this host is the
    client (it sent to a peer's watched port): its own packets left."""
    if any(f.packets_in for f in ev.watched) or \
            any(f.packets_out for f in ev.watched if remote_class(f, ev.ports)):
        return []
    ports = ", ".join(f":{p}" for p in ev.ports) or "the watched flows"
    finding = Finding(
        NEVER_ARRIVED.id,
        f"No packet to {ports} reached this host's interfaces during the watch: the "
        "problem is upstream (the client, a firewall or a router on the way).",
        confidence="medium")
    for flow in ev.flows:
        if flow.proto.is_icmp and flow.packets_in:
            finding.evidence.append(f"ICMP from {flow.peer} did arrive ({flow.packets_in}), "
                                    "so the path itself works")
    port = ev.ports[0] if ev.ports else "<port>"
    finding.fix = [f"from the client: traceroute -T -p {port} <this host> (or mtr -T -P {port}) "
                   "to find where the path stops"]
    return [finding]


def _own_ttls(ev: Evidence, peer: str) -> Counter[int]:
    """TTLs of the peer's own packets: everything it sent but RSTs and ICMP errors,
    the answers a device on the way can forge."""
    own: Counter[int] = Counter()
    for flow in ev.flows:
        if flow.peer == peer:
            own.update(flow.peer_ttls)
            own.subtract(flow.reset_ttls)
            own.subtract(flow.error_ttls)
    return +own


def rule_answers_from_path(ev: Evidence) -> list[Finding]:
    """RSTs and ICMP errors that a device on the path sent: told by their TTL, or by
    the address an ICMP error names."""
    findings = []
    own_by_peer: dict[str, Counter[int]] = {}
    for flow in ev.watched:
        if not flow.reset_ttls and not flow.errors_in:
            continue
        if flow.peer not in own_by_peer:
            own_by_peer[flow.peer] = _own_ttls(ev, flow.peer)
        own_ttls = own_by_peer[flow.peer]
        own = usual_hop(own_ttls)
        resets = sum(flow.reset_ttls.values())
        if resets and own and usual_hop(flow.reset_ttls) != own:
            findings.append(_forged_reset(flow, own, own_ttls, resets))
        for error, count in flow.errors_in.items():
            findings += _error_from_path(flow, error, count, own)
    return findings


def _forged_reset(flow: Flow, own: int, own_ttls: Counter[int], resets: int) -> Finding:
    ttl = int(flow.reset_ttls.most_common(1)[0][0])
    what = f"TCP{peer_port_text(flow)} to {flow.peer}"
    return Finding(
        FORGED_RESET.id,
        f"The RSTs that end {what} are not sent by {flow.peer}: a device "
        f"{'before' if hop_of(ttl) < own else 'beyond'} it on the path forges them in its name.",
        flows=[flow_ref(flow, resets)], count=resets,
        evidence=[forged_sentence(f"{resets} RST{'s' if resets > 1 else ''}", flow.peer, ttl,
                                  own, "other packets", count=resets) +
                  f" (TTLs of its other packets: {ttls_text(own_ttls)})"],
        fix=[f"find the device at hop {hop_of(ttl)}: pktfate probe {flow.peer} "
             f"--port {flow.peer_port or '<port>'}/tcp (or traceroute -T); then its rule that "
             f"rejects{peer_port_text(flow)} with tcp-reset. {flow.peer} is not the one refusing."])


def _error_from_path(flow: Flow, error: ErrorIn, count: int, own: int | None) -> list[Finding]:
    code, sender, ttl = error.icmp, error.sender, error.ttl
    name = ICMP_FAMILIES[icmp_of(flow)].error_name(code) or f"ICMP error {code}"
    what = f"{proto_label(flow.proto)}{peer_port_text(flow)} to {flow.peer}"
    if sender != flow.peer:
        return [Finding(
            REFUSED_ON_PATH.id,
            f"{what} is refused on the way: {sender}, a device on the path, answers with "
            f"ICMP {name}.", flows=[flow_ref(flow, count)], count=count,
            evidence=[f"{count} ICMP {code} ({name}) from {sender}, {ttl_story(ttl)}, quoting "
                      f"packets to {flow.peer}"],
            fix=[f"look at the filters and routes of {sender} for {what}"])]
    if own and hop_of(ttl) != own:
        return [Finding(
            FORGED_ICMP_ERROR.id,
            f"The ICMP {name} answers for {what} are not sent by {flow.peer}: a device on the "
            "path sends them in its name.", flows=[flow_ref(flow, count)], count=count,
            evidence=[forged_sentence(f"{count} ICMP {name}", flow.peer, ttl, own,
                                      "other packets", count=count)],
            fix=[f"find the device at hop {hop_of(ttl)}: pktfate probe {flow.peer} --port "
                 f"{flow.peer_port or '<port>'}/{flow.proto}"])]
    return []


def rule_answers_dropped_here(ev: Evidence) -> list[Finding]:
    """This host's own answers (SYN-ACKs, RSTs, replies) that it dropped itself on
    the way out: a tc program or qdisc at egress, an OUTPUT rule, a route or a
    neighbour that failed. Not 'sent': the peer never sees them."""
    findings = []
    for flow in ev.watched:
        for reason, dropped in flow.drops_out.most_common():
            info = reason_info(reason)
            if info is None or info.normal:
                continue
            findings.append(_answers_dropped(ev, flow, reason, dropped, info.cause))
    return findings


def _answers_dropped(ev: Evidence, flow: Flow, reason: str, dropped: int,
                     cause: str) -> Finding:
    info = reason_info(reason)
    assert info is not None
    answers = "SYN-ACKs" if flow.synack_out else "answers"
    iface = _way_out(ev, flow)
    finding = Finding(
        cause,
        f"This host answers {what(flow)} from {flow.peer} to {port_text(flow)}, but drops its "
        f"own {answers} on the way out ({dropped}/{flow.packets_out}): {info.meaning}.",
        flows=[flow_ref(flow, dropped)], count=dropped)
    finding.evidence.append(
        f"{arrivals(flow)}; {flow.packets_out} sent by this host ({flow.synack_out} SYN-ACKs), "
        f"{dropped} of them dropped here{where_dropped(flow, reason)} with reason {reason}, "
        "after they left the socket: the peer never sees them")
    finding.evidence += _egress_programs(ev, iface)
    finding.evidence += contrast(ev, flow, f"answers dropped here {dropped}/{flow.packets_out}")
    values = {"iface": iface, "port": flow.local_port, "src": flow.local, "dst": flow.peer}
    finding.fix = [f"look: {fill(info.look, **values)}", fill(info.fix, **values)]
    return finding


def _way_out(ev: Evidence, flow: Flow) -> str:
    """The interface this host's answers to the peer leave by."""
    route = ev.routes.get(flow.peer)
    if route is not None and route.oif:
        return route.oif
    return next(iter(flow.drop_ifaces), "<iface>")


def _egress_programs(ev: Evidence, iface: str) -> list[str]:
    """Other tools' programs at the interface's egress, as the context read them."""
    programs = ev.programs.get(iface, {}).get("tc-egress", ())
    return [f"tc egress program on {iface}: {prog.name}"
            + (f" (id {prog.id})" if prog.id is not None else "") for prog in programs]


CAUSES = (TCP_BAD_CHECKSUM, UDP_BAD_CHECKSUM, IP_BAD_CHECKSUM, TTL_EXPIRED, NEVER_ARRIVED,
          FORGED_RESET, FORGED_ICMP_ERROR, REFUSED_ON_PATH)
