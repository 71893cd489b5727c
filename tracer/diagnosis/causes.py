"""A cause pktfate can name: declared once, by the module whose rule finds it (or
by the drop-reason table), with what it explains taken from the tables. The
registry (registry.py) gathers them all."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

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


@lru_cache(maxsize=1)
def from_table() -> tuple[Cause, ...]:
    """The causes the drop-reason table alone explains (no rule of its own)."""
    return tuple(Cause(entry.id, entry.severity, entry.title, entry.explains_unanswered)
                 for entry in table_causes())


def table_cause(cause_id: str) -> Cause:
    """A cause the drop-reason table declares, by its id (KeyError if none)."""
    return {cause.id: cause for cause in from_table()}[cause_id]
