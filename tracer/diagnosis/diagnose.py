"""From evidence to a diagnosis: the registered rules, then the accounting (drops
by the table, unknown reasons, unanswered requests), `healthy` only when nothing is
left; the findings ranked by their cause's severity, then by count."""

from __future__ import annotations

from . import nat
from .accounting import rule_healthy, rule_reason_table, rule_unanswered, rule_unknown
from .evidence import Evidence, Finding
from .locations import inferred_lines
from .registry import CAUSES, RULES, severity


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


def diagnose(ev: Evidence) -> list[Finding]:
    """Every finding, the most important first; 'healthy' only when nothing is wrong."""
    findings: list[Finding] = []
    for rule in RULES:
        findings += rule.check(ev)
    findings += rule_reason_table(ev, findings, CAUSES)
    findings += rule_unknown(ev)
    findings += rule_unanswered(ev, findings, CAUSES)
    if not findings:
        findings = rule_healthy(ev)
    findings.sort(key=lambda f: (-severity(f.cause), -f.count))
    nat.annotate_rewrites(ev, findings)
    _annotate_inferred(ev, findings)
    if ev.lost or ev.sampled:
        note = _partial_events_note(ev)
        for finding in findings:
            finding.evidence.append(note)
    return findings
