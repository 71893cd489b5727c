"""The diagnosis's data: what each kernel drop reason and each refusing counter
means and which cause it counts toward. Kept as JSON in tables/ (package data),
read once, handed on as typed records."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from typing import Any

from ..decode.names import verdict_of
from ..model.kinds import CsumVerdict

NORMAL = "normal"  # the cause of reasons seen in healthy operation: never a finding


@dataclass(frozen=True)
class DropReason:
    name: str
    cause: str
    meaning: str
    usual: str  # the usual real-world cause
    look: str  # where to look (commands, with IFACE, PORT, SRC, DST to fill in)
    fix: str
    old: str | None = None  # for names only older kernels use

    @property
    def normal(self) -> bool:
        return self.cause == NORMAL


@dataclass(frozen=True)
class TableCause:
    """A cause the drop-reason table alone explains (no rule of its own)."""

    id: str
    severity: int
    title: str
    explains_unanswered: bool = False


@dataclass(frozen=True)
class CounterMeaning:
    name: str  # pktfate's name: section + counter ("TcpExtListenOverflows")
    cause: str
    meaning: str


@dataclass(frozen=True)
class LocationReason:
    """One candidate reason for drops freed at a function, with what must hold."""

    reason: str
    always: bool = False
    counters: tuple[str, ...] = ()
    checksums: tuple[CsumVerdict, ...] = ()
    answers: tuple[str, ...] = ()
    supporting: tuple[CsumVerdict, ...] = ()  # checksum verdicts that add to other grounds only
    host: tuple[str, ...] = ()  # facts of the host's recorded context (locations.HOST_FACTS)
    silent: tuple[str, ...] = ()  # counters of the place's other drop paths: none moved
    unanswered: bool = False  # the flow sent nothing back (no SYN-ACK, RST or ICMP error)


def _load(name: str) -> dict[str, Any]:
    text = resources.files(__package__).joinpath("tables", name).read_text()
    table: dict[str, Any] = json.loads(text)
    return table


@lru_cache(maxsize=1)
def drop_reasons() -> dict[str, DropReason]:
    return {name: DropReason(name, **entry)
            for name, entry in _load("drop_reasons.json")["reasons"].items()}


@lru_cache(maxsize=1)
def table_causes() -> tuple[TableCause, ...]:
    return tuple(TableCause(cause_id, **entry)
                 for cause_id, entry in _load("drop_reasons.json")["causes"].items())


@lru_cache(maxsize=1)
def counter_meanings() -> dict[str, CounterMeaning]:
    return {name: CounterMeaning(name, **entry)
            for name, entry in _load("counters.json")["counters"].items()}


@lru_cache(maxsize=1)
def drop_locations() -> dict[str, tuple[LocationReason, ...]]:
    """function -> its candidate reasons, in order (tables/drop_locations.json)."""
    lists = ("counters", "answers", "host", "silent")

    def candidate(entry: dict[str, Any]) -> LocationReason:
        found = LocationReason(reason=entry["reason"], always=entry.get("always", False),
                               unanswered=entry.get("unanswered", False),
                               **{key: tuple(entry.get(key, ())) for key in lists})
        return replace(found, checksums=tuple(map(verdict_of, entry.get("checksums", ()))),
                       supporting=tuple(map(verdict_of, entry.get("supporting", ()))))

    return {func: tuple(map(candidate, entries))
            for func, entries in _load("drop_locations.json")["locations"].items()}


def reason_info(name: str) -> DropReason | None:
    return drop_reasons().get(name)


def fill(template: str, **values: object) -> str:
    """The table's placeholders (IFACE, PORT, SRC, DST) with the flow's values."""
    for key, value in values.items():
        if value is not None:
            template = template.replace(key.upper(), str(value))
    return template
