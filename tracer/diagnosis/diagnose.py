"""From evidence to a diagnosis: every rule, drops no rule explains, `healthy` only
when nothing is wrong; the findings ranked by severity and count."""

from __future__ import annotations

from collections import Counter

from .evidence import Evidence, Finding
from .rules import BENIGN_REASONS, RULES, SIMPLE_CAUSES, arrivals, flow_ref

SEVERITY = {"forged-reset": 85, "forged-icmp-error": 85, "refused-on-path": 85,
            "tcp-bad-checksum": 90, "udp-bad-checksum": 90, "ip-bad-checksum": 90,
            "firewall-drop": 80, "firewall-reject": 80, "rp-filter": 80, "listen-overflow": 75,
            "no-listener": 70, "no-route": 70, "never-arrived": 60, "unknown": 10}
DEFAULT_SEVERITY = 65  # the causes the kernel names directly: observed, so above absences


def _explained_reasons(findings: list[Finding]) -> set[str]:
    causes = {f.cause for f in findings}
    reasons = {r for r, (c, _, _) in SIMPLE_CAUSES.items() if c in causes}
    pairs = {"tcp-bad-checksum": "TCP_CSUM", "udp-bad-checksum": "UDP_CSUM",
             "ip-bad-checksum": "IP_CSUM", "firewall-drop": "NETFILTER_DROP",
             "firewall-reject": "NETFILTER_DROP", "no-listener": "NO_SOCKET",
             "listen-overflow": "TCP_LISTEN_OVERFLOW", "rp-filter": "IP_RPFILTER"}
    reasons |= {pairs[c] for c in causes if c in pairs}
    return reasons


def rule_unknown(ev: Evidence, findings: list[Finding]) -> list[Finding]:
    """Drops no other rule explains, still reported with reason, place and count."""
    explained = _explained_reasons(findings) | BENIGN_REASONS
    left: Counter = Counter()
    where: dict[str, Counter] = {}
    flows: list[dict] = []
    for flow in ev.watched:
        for reason, n in flow.drops.items():
            if reason not in explained:
                left[reason] += n
                where.setdefault(reason, Counter()).update(flow.drop_locations)
                flows.append(flow_ref(flow, n))
    if not left:
        return []
    reasons = ", ".join(f"{r} x{n}" for r, n in left.most_common())
    finding = Finding("unknown", f"The kernel dropped watched packets for reasons pktfate has "
                      f"no rule for: {reasons}.", flows=flows, count=sum(left.values()),
                      confidence="low")
    for reason, locs in where.items():
        finding.evidence.append(f"{reason}: at {', '.join(f for f, _ in locs.most_common(3))}")
    finding.fix = ["look the reason up in the kernel's include/net/dropreason-core.h"]
    return [finding]


def rule_healthy(ev: Evidence) -> list[Finding]:
    flows = [f for f in ev.watched if f.packets_in or f.packets_out]
    if not flows:
        return []
    syns = sum(f.syn_in for f in flows)
    answered = sum(f.syn_fates.get("answered", 0) for f in flows)
    established = sum(f.established for f in flows)
    forwarded = sum(f.forwarded for f in flows)
    packets = sum(f.packets_in + f.packets_out for f in flows)
    parts = []
    if forwarded:  # a router passes SYNs on rather than answering them
        parts.append(f"{forwarded} packets forwarded")
    elif syns:
        parts.append(f"SYNs answered {answered}/{syns}")
    if established:
        parts.append(f"{established} connections established")
    parts.append(f"{packets} packets in {len(flows)} flows, none dropped for a reason that "
                 "matters")
    return [Finding("healthy", "Healthy: " + "; ".join(parts) + ".",
                    flows=[flow_ref(f, f.packets_in + f.packets_out) for f in flows],
                    evidence=[f"{f.label}: {arrivals(f)}, {f.packets_out} sent"
                              for f in flows[:5]], count=packets)]


def _partial_events_note(ev: Evidence) -> str:
    parts = []
    if ev.sampled:
        parts.append(f"{ev.sampled} events were sampled out (a flood)")
    if ev.lost:
        parts.append(f"{ev.lost} were lost in the ring buffer")
    exact = "drops and arrivals counted here are the kernel's own, exact" if \
        ev.kernel_counts else "counts may be low"
    return "; ".join(parts) + f": {exact}"


def diagnose(ev: Evidence) -> list[Finding]:
    """Every finding, the most important first; 'healthy' only when nothing is wrong."""
    findings: list[Finding] = []
    for fn in RULES:
        findings += fn(ev)
    findings += rule_unknown(ev, findings)
    if not findings:
        findings = rule_healthy(ev)
    findings.sort(key=lambda f: (-SEVERITY.get(f.cause, DEFAULT_SEVERITY), -f.count))
    if ev.lost or ev.sampled:
        note = _partial_events_note(ev)
        for finding in findings:
            finding.evidence.append(note)
    return findings
