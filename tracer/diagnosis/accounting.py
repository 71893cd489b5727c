"""Account for every request: drops the specific rules left unexplained (by the
drop-reason table), reasons the table does not know, SYNs that got no answer
and no drop, and `healthy` only when every request was answered."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from ..correlate.correlator import UNKNOWN_REASON, Flow
from ..model.kinds import Fate, NatKind
from ..model.protocols import Proto
from .causes import Cause
from .context import next_hop_lines, socket_filter_lines
from .evidence import Evidence, Finding, FlowRef, attempts, incomplete
from .tables import counter_meanings, fill, reason_info
from .wording import (
    arrivals,
    contrast,
    counter_evidence,
    drop_functions,
    dropped_line,
    flow_label,
    flow_ref,
    iface_of,
    port_text,
    what,
)

UNKNOWN = Cause("unknown", 10, "the kernel dropped watched packets for a reason this "
                "pktfate's table does not know (a newer kernel): reason, place, counts")
UNANSWERED = Cause("unanswered", 50, "requests that arrived and got no answer and no drop: "
                   "what this host did, the counters that moved, what that points to")
HEALTHY = Cause("healthy", 0, "every watched request was answered and every connection "
                "established; nothing dropped for a reason that matters")
CAUSES = (UNKNOWN, UNANSWERED, HEALTHY)
# The table's causes whose findings get the host's context said about them.
SOCKET_FILTER, NEXT_HOP_CAUSES = "socket-filter", ("neighbour-failed", "not-for-this-host")


def explained_reasons(findings: list[Finding], flow_id: int,
                      causes: Mapping[str, Cause]) -> set[str]:
    """The drop reasons the findings about a flow (or about no flow in particular)
    account for."""
    reasons: set[str] = set()
    for finding in findings:
        if finding.about(flow_id):
            reasons.update(causes[finding.cause].reasons)
    return reasons


def _unexplained(ev: Evidence, findings: list[Finding],
                 causes: Mapping[str, Cause]) -> dict[str, list[tuple[Flow, int]]]:
    """Known reasons, not normal, that no finding's cause accounts for."""
    left: dict[str, list[tuple[Flow, int]]] = {}
    for flow in ev.flows:
        if not flow.drops:
            continue
        explained = explained_reasons(findings, flow.id, causes)
        for reason, n in flow.drops.items():
            info = reason_info(reason)
            if info is None or info.normal or reason in explained or n <= 0:
                continue
            left.setdefault(reason, []).append((flow, n))
    return left


def rule_reason_table(ev: Evidence, findings: list[Finding],
                      causes: Mapping[str, Cause]) -> list[Finding]:
    """Every drop with a known reason that the specific rules did not explain, in the
    table's words: what it means, the usual cause, where to look, the fix."""
    found = []
    for reason, flows in _unexplained(ev, findings, causes).items():
        info = reason_info(reason)
        assert info is not None
        for flow, dropped in flows:
            inferred = reason in flow._inferred
            iface = iface_of(flow)
            values = {"iface": iface, "port": flow.local_port, "src": flow.peer,
                      "dst": flow.peer}
            finding = Finding(
                info.cause, f"{what(flow)} from {flow.peer} to {port_text(flow) or flow.local} "
                f"are dropped ({dropped}/{flow.packets_in}): {info.meaning}.",
                flows=[flow_ref(flow, dropped)], count=dropped,
                confidence="medium" if inferred else "high")
            finding.evidence.append(dropped_line(flow, dropped, reason))
            finding.evidence.append(f"{reason} usually means: {info.usual}")
            finding.evidence += counter_evidence(ev, causes[info.cause].counters)
            finding.evidence += contrast(ev, flow, f"dropped {dropped}/{flow.packets_in} "
                                                   f"({reason})")
            finding.fix = [f"look: {fill(info.look, **values)}", fill(info.fix, **values)]
            _add_context(ev, flow, finding)
            found.append(finding)
    return found


def _add_context(ev: Evidence, flow: Flow, finding: Finding) -> None:
    """What the host's recorded context says about a table finding's cause."""
    if finding.cause == SOCKET_FILTER:
        lines, fixes = socket_filter_lines(ev, flow)
        finding.evidence += lines
        finding.fix = fixes + finding.fix
    elif finding.cause in NEXT_HOP_CAUSES:
        finding.evidence += next_hop_lines(ev, flow.peer)


def rule_unknown(ev: Evidence) -> list[Finding]:
    """Drops for reasons the table does not know, still reported with reason,
    place and count."""
    left: Counter[str] = Counter()
    where: dict[str, Counter[str]] = {}
    flows: list[FlowRef] = []
    for flow in ev.flows:
        for reason, n in flow.drops.items():
            if reason_info(reason) is None and n > 0:
                left[reason] += n
                where.setdefault(reason, Counter()).update(drop_functions(flow, reason))
                flows.append(flow_ref(flow, n))
    if not left:
        return []
    if set(left) == {UNKNOWN_REASON}:  # a kernel before 5.17: it names no reason at all
        places = where[UNKNOWN_REASON]
        at = ", ".join(f"{f} x{n}" for f, n in places.most_common(3))
        finding = Finding(
            UNKNOWN.id, f"The kernel dropped {left[UNKNOWN_REASON]} watched packets in {at}; it "
            "names no drop reasons (before 5.17), and neither that place nor the counters tell "
            "pktfate why.", flows=flows, count=left[UNKNOWN_REASON], confidence="low")
        finding.evidence += ["kernel counters that moved: " + ", ".join(
            f"{k} +{v}" for k, v in sorted(ev.counters.items())[:8])] if ev.counters else []
        finding.fix = [f"read the kernel source of {places.most_common(1)[0][0]} for this "
                       "kernel's version: the paths that free the packet (kfree_skb) say why",
                       "compare nstat -az before and after sending one packet"]
        return [finding]
    reasons = ", ".join(f"{r} x{n}" for r, n in left.most_common())
    finding = Finding(UNKNOWN.id, f"The kernel dropped watched packets for reasons this "
                      f"pktfate does not know: {reasons}.", flows=flows,
                      count=sum(left.values()), confidence="low")
    for reason, places in where.items():
        finding.evidence.append(f"{reason}: at {', '.join(f for f, _ in places.most_common(3))}")
    finding.fix = ["look the reason up in this kernel's include/net/dropreason-core.h (or the "
                   "subsystem's own list for SUBSYS_ names), then the function named above"]
    return [finding]


def _explains_unanswered(findings: list[Finding], flow: Flow,
                         causes: Mapping[str, Cause]) -> bool:
    return any(causes[finding.cause].explains_unanswered and finding.about(flow.id)
               for finding in findings)


def _what_this_host_did(flow: Flow) -> str:
    did = [f"{flow.synack_out} SYN-ACKs sent" if flow.synack_out else "no SYN-ACK sent",
           f"{flow.synack_retrans_out} of them again" if flow.synack_retrans_out else "",
           f"{flow.syn_retrans_in} SYNs came again (the peer retried)"
           if flow.syn_retrans_in else "",
           f"{flow.acks_in} ACKs back from the peer" if flow.acks_in
           else "no ACK back from the peer"]
    return "this host: " + ", ".join(d for d in did if d)


def _pointers(ev: Evidence) -> list[tuple[str, str, int]]:
    """Counters that moved and mean refusal or loss: (cause, counter, delta)."""
    meanings = counter_meanings()
    return [(meanings[name].cause, name, n) for name, n in ev.counters.items()
            if name in meanings and meanings[name].cause != "normal" and n > 0]


def rule_unanswered(ev: Evidence, findings: list[Finding],
                    causes: Mapping[str, Cause]) -> list[Finding]:
    """SYNs (and echo requests) that arrived and got neither an answer nor a drop that
    any finding explains: never left out, never called healthy."""
    found = []
    pointers = _pointers(ev)
    for flow in ev.watched:
        # A SYN the peer sent again, whose retry was answered, is one attempt: its
        # first copy's silence is a delay, not a request left unanswered.
        retried = min(flow.syn_retrans_in, flow.syn_fates.get(Fate.ANSWERED, 0))
        silent = flow.syn_fates.get(Fate.UNANSWERED, 0)
        # Forwarded (or translated to a container) and no answer came back this way.
        onward = flow.syn_fates.get(Fate.FORWARDED, 0)
        silent, onward = _less(silent, onward, retried)
        # SYNs freed for a reason that is normal elsewhere: no finding speaks for them.
        freed = {r: n for r, n in flow.syn_drops.items()
                 if (info := reason_info(r)) is not None and info.normal}
        # Answered, yet the handshake never completed (and no rule said why).
        stalled = incomplete(flow)
        waiting = silent + onward + sum(freed.values()) + stalled
        if flow.proto is not Proto.TCP or not waiting or \
                _explains_unanswered(findings, flow, causes):
            continue
        parts = [f"{silent} got no answer and no drop was reported" if silent else "",
                 f"{onward} were forwarded{_to_where(flow)} and no answer came back through "
                 "this host" if onward else "",
                 f"{sum(freed.values())} were freed without a telling reason" if freed else "",
                 f"{stalled} were answered but the handshake never completed" if stalled
                 else ""]
        finding = Finding(
            UNANSWERED.id,
            f"{waiting} of {flow.syn_in} {what(flow)} from {flow.peer} to {port_text(flow)} are "
            f"not accounted for: {'; '.join(p for p in parts if p)}.",
            flows=[flow_ref(flow, waiting)], count=waiting, confidence="low")
        finding.evidence.append(f"{arrivals(flow)}; {_what_this_host_did(flow)}")
        finding.evidence += [f"{n} SYNs freed with reason {r} at "
                             f"{', '.join(drop_functions(flow, r))}"
                             for r, n in freed.items()]
        finding.evidence += [f"kernel counter {name} +{n} during the watch: "
                             f"{counter_meanings()[name].meaning} (points to {cause})"
                             for cause, name, n in pointers]
        finding.evidence += contrast(ev, flow, f"unanswered {waiting}/{flow.syn_in}")
        if pointers:
            finding.confidence = "medium"
            pointed = ", ".join(sorted({cause for cause, _, _ in pointers}))
            finding.fix = [f"the counters point to: {pointed}; check that first"]
        finding.fix += [f"see the listener: ss -ltnp 'sport = :{flow.local_port}' (is it "
                        "there, is its queue full?)",
                        "watch the kernel's counters while it happens: nstat -az | grep -i "
                        "-e drop -e fail -e overflow"]
        found.append(finding)
    return found + _unanswered_echoes(ev, findings)


def _unanswered_echoes(ev: Evidence, findings: list[Finding]) -> list[Finding]:
    """Echo requests that arrived and got no reply, with no drop reported."""
    found = []
    for flow in ev.flows:
        waiting = flow.fates.get(Fate.UNANSWERED, 0)
        if not flow.proto.is_icmp or not waiting or \
                any(ref.flow == flow.id for f in findings for ref in f.flows):
            continue
        finding = Finding(
            UNANSWERED.id, f"{waiting} of {flow.echo_requests_in} ICMP echo requests from "
            f"{flow.peer} got no reply, and the kernel reported no drop for them.",
            flows=[flow_ref(flow, waiting)], count=waiting, confidence="low")
        finding.evidence.append(f"{arrivals(flow)}; {flow.echo_replies_out} echo replies sent")
        ignore = ev.sysctls.get("net.ipv4.icmp_echo_ignore_all")
        if ignore:
            finding.evidence.append(f"net.ipv4.icmp_echo_ignore_all={ignore}: this host "
                                    "ignores echo requests on purpose")
            finding.confidence = "high"
        finding.fix = ["check sysctl net.ipv4.icmp_echo_ignore_all and "
                       "net.ipv4.icmp_ratelimit, and the OUTPUT rules for ICMP"]
        found.append(finding)
    return found


def _less(silent: int, onward: int, retried: int) -> tuple[int, int]:
    """The SYNs without an answer, less the retried ones whose retry was answered."""
    cut = min(silent, retried)
    return silent - cut, max(onward - (retried - cut), 0)


def _to_where(flow: Flow) -> str:
    """' to 172.30.0.2:80' where this host's DNAT sent the flow's packets."""
    dnat = next((r for r in flow.rewrites if r.kind is NatKind.DNAT), None)
    return f" to {dnat.addr}:{dnat.port}" if dnat is not None else ""


def rule_healthy(ev: Evidence, of: list[Flow] | None = None) -> list[Finding]:
    """Only when every watched SYN was answered, the connections completed, and
    nothing was dropped that matters (the caller runs it when no finding is left,
    or none about the flows `of`: the watched service's, beside others' noise).
    A SYN this host forwarded is answered only when its answer came back through
    here: forwarding alone is not an answer."""
    flows = [f for f in (ev.watched if of is None else of) if f.packets_in or f.packets_out]
    if not flows:
        return []
    syns = sum(f.syn_in for f in flows)
    answered = sum(f.syn_fates.get(Fate.ANSWERED, 0) for f in flows)
    established = sum(f.established for f in flows)
    forwarded = sum(f.forwarded for f in flows)
    packets = sum(f.packets_in + f.packets_out for f in flows)
    tried = sum(attempts(f) for f in flows)
    completed = sum(f.completed for f in flows)
    if syns and (answered < tried or completed < tried):
        return []  # not every connection answered and completed: never healthy
    parts = []
    if syns:
        parts.append(f"SYNs answered {answered}/{syns}")
    if forwarded:  # a router or a port mapping passes them on: the answers came back
        parts.append(f"{forwarded} packets forwarded")
    if established:
        parts.append(f"{established} connections established")
    parts.append(f"{packets} packets in {len(flows)} flows, none dropped for a reason that "
                 "matters")
    return [Finding(HEALTHY.id, "Healthy: " + "; ".join(parts) + ".",
                    flows=[flow_ref(f, f.packets_in + f.packets_out) for f in flows],
                    evidence=[f"{flow_label(f)}: {arrivals(f)}, {f.packets_out} sent"
                              for f in flows[:5]], count=packets)]
