"""From evidence to a diagnosis: the registered rules, then the accounting (drops
by the table, unknown reasons, unanswered requests), `healthy` only when nothing is
left; the findings ranked by their cause's severity, then by count."""

from __future__ import annotations

from ..correlate.correlator import Flow
from . import nat
from .accounting import rule_healthy, rule_reason_table, rule_unanswered, rule_unknown
from .evidence import Evidence, Finding
from .locations import inferred_lines
from .registry import CAUSES, RULES, severity
from .wording import remote_class


def _partial_events_note(ev: Evidence) -> str:
    parts = []
    if ev.sampled:
        parts.append(f"{ev.sampled} events were sampled out (a flood)")
    if ev.lost:
        parts.append(f"{ev.lost} were lost in the ring buffer")
    exact = "drops and arrivals counted here are the kernel's own, exact" if \
        ev.kernel_counts else "counts may be low"
    return "; ".join(parts) + f": {exact}"


def _annotate_inferred(ev: Evidence, findings: list[Finding]) -> None:
    """A finding resting on a drop reason the kernel did not give says so, and what
    the reason was told from; its confidence is then medium at most."""
    by_id = {flow.id: flow for flow in ev.flows}
    for finding in findings:
        flows = [by_id[ref.flow] for ref in finding.flows if ref.flow in by_id]
        lines = [line for flow in flows for line in inferred_lines(flow)]
        if lines:
            finding.evidence += lines
            if finding.confidence == "high":
                finding.confidence = "medium"


def _flows_of(ev: Evidence, finding: Finding) -> list[Flow]:
    by_id = {flow.id: flow for flow in ev.flows}
    return [by_id[ref.flow] for ref in finding.flows if ref.flow in by_id]


def _remote_only(ev: Evidence, finding: Finding) -> bool:
    """Whether every flow the finding is about is of the lower class: packets from a
    peer's watched port, not to the watched service here."""
    flows = _flows_of(ev, finding)
    return bool(flows) and all(remote_class(flow, ev.ports) for flow in flows)


def _remote_note(ev: Evidence, finding: Finding) -> str:
    ports = sorted({flow.peer_port for flow in _flows_of(ev, finding) if flow.peer_port})
    watched = ", ".join(f":{p}" for p in ev.ports)
    return (f"not the watched service ({watched} on this host): these packets come from "
            f"port {', '.join(map(str, ports))} on the peer's side, and are listed after it")


def diagnose(ev: Evidence) -> list[Finding]:
    """Every finding, the most important first; 'healthy' only when nothing is wrong."""
    findings: list[Finding] = []
    for rule in RULES:
        findings += rule.check(ev)
    findings += rule_reason_table(ev, findings, CAUSES)
    findings += rule_unknown(ev)
    findings += rule_unanswered(ev, findings, CAUSES)
    # Where this host is the watched service, its findings come first, whatever the
    # severity of one about packets that only come from a peer's watched port, and
    # those say so. (On a client, watching its own connections to a port
    # elsewhere, those packets are the point: ranked as any.)
    serving = any(flow.local_port in ev.ports for flow in ev.watched)
    remote = {id(f): serving and _remote_only(ev, f) for f in findings}
    if not findings:
        findings = rule_healthy(ev)
        remote = {id(f): False for f in findings}
    elif serving and all(remote.values()):  # nothing about the service: is it healthy?
        served = [flow for flow in ev.watched if not remote_class(flow, ev.ports)]
        healthy = rule_healthy(ev, served)
        remote.update({id(f): False for f in healthy})
        findings = healthy + findings
    findings.sort(key=lambda f: (remote[id(f)], -severity(f.cause), -f.count))
    for finding in findings:
        if remote[id(finding)]:
            finding.evidence.insert(0, _remote_note(ev, finding))
    nat.annotate_rewrites(ev, findings)
    _annotate_inferred(ev, findings)
    if ev.lost or ev.sampled:
        note = _partial_events_note(ev)
        for finding in findings:
            finding.evidence.append(note)
    return findings
