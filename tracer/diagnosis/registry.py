"""The rule registry: every cause pktfate can name, declared by the rule that
finds it (id, severity, a one-line title), with the kernel drop reasons and
counters it explains taken from the tables. The README's cause list and the lab's
expected causes are held equal to it by tests."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

from .evidence import Evidence, Finding
from .tables import counter_meanings, drop_reasons, table_causes


@dataclass(frozen=True)
class Cause:
    id: str
    severity: int  # ranks findings: the higher, the more it matters
    title: str  # one line: what the cause is (the README lists these)
    # Whether a finding of this cause explains SYNs that got no answer (so that
    # they are not reported again as `unanswered`).
    explains_unanswered: bool = False
    # Reasons it explains beyond those the table gives it: a REJECT is netfilter's
    # drop (NETFILTER_DROP, counted toward firewall-drop) with an answer.
    also_explains: tuple[str, ...] = ()

    @property
    def reasons(self) -> tuple[str, ...]:
        """The kernel drop reasons this cause explains (from the table)."""
        return _reasons_by_cause().get(self.id, ()) + self.also_explains

    @property
    def counters(self) -> tuple[str, ...]:
        return tuple(c.name for c in counter_meanings().values() if c.cause == self.id)


@lru_cache(maxsize=1)
def _reasons_by_cause() -> dict[str, tuple[str, ...]]:
    by_cause: dict[str, tuple[str, ...]] = {}
    for reason in drop_reasons().values():
        by_cause[reason.cause] = by_cause.get(reason.cause, ()) + (reason.name,)
    return by_cause


Rule = Callable[[Evidence], list[Finding]]
CAUSES: dict[str, Cause] = {}
RULES: list[tuple[Rule, tuple[str, ...]]] = []  # each rule and the causes it may name


def declare(cause: Cause) -> Cause:
    known = CAUSES.setdefault(cause.id, cause)
    if known != cause:
        raise ValueError(f"cause {cause.id} declared twice, differently")
    return cause


for _entry in table_causes():  # causes the drop-reason table alone explains
    declare(Cause(_entry.id, _entry.severity, _entry.title, _entry.explains_unanswered))


def rule(*causes: Cause | str) -> Callable[[Rule], Rule]:
    """Register a rule with the causes it may name: a Cause it declares, or the id
    of one declared already (by the table or another rule)."""
    ids = tuple(declare(c).id if isinstance(c, Cause) else CAUSES[c].id for c in causes)

    def register(fn: Rule) -> Rule:
        RULES.append((fn, ids))
        return fn
    return register


def severity(cause_id: str) -> int:
    return CAUSES[cause_id].severity


def explained_reasons(findings: list[Finding], flow_id: int) -> set[str]:
    """The drop reasons the findings about a flow (or about no flow in particular)
    account for."""
    reasons: set[str] = set()
    for finding in findings:
        if not finding.flows or any(ref["flow"] == flow_id for ref in finding.flows):
            reasons.update(CAUSES[finding.cause].reasons)
    return reasons
