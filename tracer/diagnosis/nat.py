"""What NAT did to the watched packets, and the failures only following a packet
by its skb can show: a port mapping whose packets this host will not forward, or
sends to an address nobody holds. Also the host's own context for them: the
rule that rewrote them, the forwarding settings, the neighbour entry."""

from __future__ import annotations

from ..correlate.correlator import Flow, Rewrite
from ..model.host import RouteInfo
from ..model.kinds import NatKind
from ..model.protocols import HOST_UNREACHABLE, proto_name
from .causes import Cause
from .context import next_hop_lines
from .evidence import Evidence, Finding
from .tables import drop_reasons
from .wording import contrast, counter_lines, dropped_line, flow_ref, icmp_of, port_text, what

# Where the kernel frees a packet that needs forwarding while forwarding is off:
# ip_error() with IP_INADDRERRORS (IPv4); IPv6 counts it as an address error too.
FORWARDING_OFF_REASONS = ("IP_INADDRERRORS",)
# The table's reasons for a next hop that cannot be resolved (NEIGH_FAILED...).
NEIGHBOUR_REASONS = tuple(r.name for r in drop_reasons().values() if r.cause == "neighbour-failed")


def rewrite_text(rewrite: Rewrite) -> str:
    port = f":{rewrite.port}" if rewrite.port is not None else ""
    host = f"[{rewrite.addr}]" if ":" in rewrite.addr and port else rewrite.addr
    return f"{rewrite.kind.value.upper()} to {host}{port}"


def nat_rules_for(ev: Evidence, flow: Flow, rewrite: Rewrite) -> list[str]:
    """The NAT rules whose own match and target explain this rewrite of the flow's
    packets: same kind, same target address (and port), the flow's port matched."""
    kinds = ("DNAT", "REDIRECT") if rewrite.kind is NatKind.DNAT else ("SNAT", "MASQUERADE")
    found = []
    for nat in ev.nat:
        if nat.target not in kinds:
            continue
        to = nat.to
        to_addr = to.rsplit(":", 1)[0].strip("[]") if to.count(":") == 1 or "]" in to else to
        if to_addr and to_addr.split("-")[0] != rewrite.addr:
            continue
        if nat.dport and nat.dport != str(flow.local_port):
            continue
        if nat.proto and nat.proto not in (proto_name(flow.proto), "all"):
            continue
        found.append(nat.rule)
    return found


def rewrite_lines(ev: Evidence, flow: Flow) -> list[str]:
    """'rewritten by DNAT to 172.30.0.2:80 (3 packets), by: iptables -t nat ...'."""
    lines = []
    for rewrite, count in flow.rewrites.most_common():
        rules = nat_rules_for(ev, flow, rewrite)
        by = f", by: {rules[0]}" if len(rules) == 1 else \
            f", by one of {len(rules)} rules: {'; '.join(rules)}" if rules else \
            ", by a NAT rule pktfate did not find (see iptables-save -t nat; nft list ruleset)"
        lines.append(f"{count} rewritten here by {rewrite_text(rewrite)} (followed by their skb)"
                     f"{by}")
    return lines


def _forwarding(ev: Evidence, flow: Flow, iface: str | None) -> tuple[bool | None, list[str]]:
    """Whether this host forwards the flow's family (None: not recorded), and the
    settings that say so."""
    names = ["net.ipv6.conf.all.forwarding"] if ":" in flow.local else \
        ["net.ipv4.ip_forward", f"net.ipv4.conf.{iface}.forwarding"]
    known = {n: ev.sysctls[n] for n in names if n in ev.sysctls}
    if not known:
        return None, []
    return all(known.values()), [f"{n} = {v}" for n, v in known.items()]


def _dnat(flow: Flow) -> list[Rewrite]:
    return [r for r in flow.rewrites if r.kind is NatKind.DNAT]


FORWARDING_OFF = Cause("forwarding-off", 86, "a port mapping (DNAT) sends packets on to another "
                       "host, but IP forwarding is off: the kernel drops them",
                       explains_unanswered=True, also_explains=FORWARDING_OFF_REASONS)
NAT_BACKEND_UNREACHABLE = Cause("nat-backend-unreachable", 84, "a port mapping (DNAT) sends "
                                "packets to an address nobody answers for on its link (the "
                                "container or backend is gone or moved)",
                                explains_unanswered=True, also_explains=NEIGHBOUR_REASONS)
CAUSES = (FORWARDING_OFF, NAT_BACKEND_UNREACHABLE)


def rule_forwarding_off(ev: Evidence) -> list[Finding]:
    findings = []
    for flow in ev.watched:
        dropped = sum(flow.drops.get(r, 0) for r in FORWARDING_OFF_REASONS)
        iface = next((a.iface for a in flow.arrived_on if a.iface), None)
        forwards, settings = _forwarding(ev, flow, iface)
        if not _dnat(flow) or not dropped or forwards:
            continue
        target = rewrite_text(_dnat(flow)[0])
        finding = Finding(
            FORWARDING_OFF.id,
            f"{what(flow)} from {flow.peer} to {port_text(flow)} are rewritten by {target} and "
            f"then dropped ({dropped}/{flow.packets_in}): IP forwarding is off, so this host "
            "does not send them on.", flows=[flow_ref(flow, dropped)], count=dropped,
            confidence="high" if settings else "medium")
        finding.evidence += rewrite_lines(ev, flow)
        finding.evidence.append(dropped_line(flow, dropped, FORWARDING_OFF_REASONS[0]))
        finding.evidence.append("settings: " + ", ".join(settings) if settings else
                                "the forwarding settings were not recorded")
        finding.evidence += counter_lines(ev, ("IpInAddrErrors",))
        finding.evidence += contrast(ev, flow, f"dropped {dropped}/{flow.packets_in}")
        six = ":" in flow.local
        finding.fix = [
            "turn forwarding on: sysctl -w " + ("net.ipv6.conf.all.forwarding=1" if six else
                                                "net.ipv4.ip_forward=1")
            + " (and persist it in /etc/sysctl.d/: container runtimes expect it on)",
            f"then verify: the service answers on {port_text(flow)} and nstat -az IpInAddrErrors "
            "stops growing",
        ]
        findings.append(finding)
    return findings


def rule_nat_backend_unreachable(ev: Evidence) -> list[Finding]:
    findings = []
    neighbour_reasons = NEIGHBOUR_REASONS
    for flow in ev.watched:
        dropped = sum(flow.drops.get(r, 0) for r in neighbour_reasons)
        if not _dnat(flow) or not dropped:
            continue
        rewrite = _dnat(flow)[0]
        reason = max(neighbour_reasons, key=lambda r: flow.drops.get(r, 0))
        finding = Finding(
            NAT_BACKEND_UNREACHABLE.id,
            f"{what(flow)} from {flow.peer} to {port_text(flow)} are rewritten to {rewrite.addr} "
            f"and dropped ({dropped}/{flow.packets_in}): nobody answers for {rewrite.addr} on "
            "its link.", flows=[flow_ref(flow, dropped)], count=dropped)
        finding.evidence += rewrite_lines(ev, flow)
        finding.evidence.append(dropped_line(flow, dropped, reason))
        finding.evidence += next_hop_lines(ev, rewrite.addr,
                                           ev.rewrite_routes.get(rewrite.addr) or RouteInfo())
        unreachable = flow.icmp_errors_sent.get(HOST_UNREACHABLE[icmp_of(flow)], 0)
        if unreachable:
            finding.evidence.append(f"this host answered {unreachable} of them with ICMP host "
                                    f"unreachable: {flow.peer} sees 'no route to host'")
        finding.fix = [
            f"is the backend at {rewrite.addr} running, with that address? "
            f"ip neigh show {rewrite.addr}; the container runtime's view (docker ps, crictl "
            "ps)",
            "point the mapping at the backend's current address (replace the DNAT rule), "
            "or restart the backend so that its runtime rewrites the mapping",
        ]
        findings.append(finding)
    return findings


def annotate_rewrites(ev: Evidence, findings: list[Finding]) -> None:
    """Every other finding about a flow NAT rewrote says so, and by which rule."""
    by_id = {flow.id: flow for flow in ev.flows}
    for finding in findings:
        if finding.cause in (FORWARDING_OFF.id, NAT_BACKEND_UNREACHABLE.id):
            continue
        for ref in finding.flows:
            flow = by_id.get(ref.flow)
            if flow is not None and flow.rewrites:
                finding.evidence += rewrite_lines(ev, flow)
