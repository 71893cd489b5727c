"""Read a recorded `watch --json` output back, defensively: a recording is user
input. Every line is checked against what the replay uses, so that a binary file,
a line cut short, a huge line or a field of the wrong type ends in one clear
sentence (a PktfateError), never in a traceback deep in the correlator.

Lines of kinds this version does not know, and fields it does not use, are
ignored: a newer pktfate's recording replays as far as its fields keep their
meaning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from ..errors import PktfateError
from .events import PacketEvent

# A packet line is under 1 kB, a stats line with 16,384 kernel counts a few MB.
MAX_LINE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class MapOf:
    """A JSON object of arbitrary keys whose values all match `value`."""

    value: object


@dataclass(frozen=True)
class ListOf:
    item: object


@dataclass(frozen=True)
class Record:
    """A JSON object with known keys; `optional` ones may be missing."""

    fields: dict
    optional: frozenset = field(default_factory=frozenset)


INT = (int,)
NUMBER = (int, float)
STR = (str,)
OPT_INT = (int, type(None))
OPT_STR = (str, type(None))
OPT_BOOL = (bool, type(None))

QUOTED = Record({"proto": STR, "src": STR, "dst": STR, "ttl": INT, "sport": OPT_INT,
                 "dport": OPT_INT, "seq": OPT_INT})

# Every field of PacketEvent, with the types the replay accepts.
PACKET = Record({
    "ts": NUMBER, "hook": STR, "iface": OPT_STR, "netns": INT, "family": INT, "proto": STR,
    "src": STR, "dst": STR, "sport": OPT_INT, "dport": OPT_INT, "length": INT, "ttl": INT,
    "ip_id": OPT_INT, "tcp_flags": OPT_STR, "seq": OPT_INT, "ack": OPT_INT,
    "icmp_type": OPT_INT, "icmp_code": OPT_INT, "reason": OPT_STR, "location": OPT_STR,
    "state": OPT_STR, "checksum": OPT_STR, "csum_field": OPT_INT, "skb": OPT_STR,
    "quoted": (type(None), QUOTED), "tracked": (bool,),
}, optional=frozenset({"quoted", "tracked"}))

KERNEL_COUNT = Record({"hook": STR, "proto": STR, "src": STR, "dst": STR, "sport": OPT_INT,
                       "dport": OPT_INT, "tcp_flags": OPT_STR, "icmp_type": OPT_INT,
                       "reason": OPT_STR, "count": INT})

SPECS = {
    "start": Record({"local_addrs": ListOf(STR), "ports": ListOf(INT)}),
    "packet": PACKET,
    "stats": Record({"matched": MapOf(INT), "lost": MapOf(INT), "sampled": MapOf(INT),
                     "kernel_counts": ListOf(KERNEL_COUNT), "agg_full": INT,
                     "flows_evicted": INT},
                    optional=frozenset({"sampled", "kernel_counts", "agg_full",
                                        "flows_evicted"})),
    "counters": Record({
        "delta": MapOf(INT),
        "firewall": ListOf(Record({"rule": STR, "packets": INT, "verdict": STR})),
    }, optional=frozenset({"firewall"})),
}

# The host's context (host/context.py), field by field in the README.
ROUTE = Record({"oif": OPT_STR, "gateway": OPT_STR, "src": OPT_STR, "mtu": OPT_INT,
                "rp_filter": MapOf(INT)},
               optional=frozenset({"oif", "gateway", "src", "mtu", "rp_filter"}))
PROCESS = Record({"pid": INT, "comm": STR, "cgroup": OPT_STR, "unit": OPT_STR,
                  "cgroup_programs": ListOf(Record({"attach": STR, "id": INT, "name": STR}))})
LISTENERS = MapOf(Record({
    "listening": INT, "accept_queue": INT, "half_open": INT,
    "sockets": ListOf(Record({"addr": STR, "accept_queue": INT, "backlog": INT,
                              "processes": ListOf(PROCESS)}))}, optional=frozenset({"sockets"})))
CONTEXT_FIELDS = {
    "routes": MapOf(ROUTE),
    "rewrite_routes": MapOf(ROUTE),
    "neighbours": ListOf(Record({"addr": STR, "iface": OPT_STR, "state": STR,
                                 "lladdr": OPT_STR, "for": ListOf(STR)})),
    "listeners": LISTENERS,
    "sysctls": MapOf(INT),
    "programs": MapOf(MapOf(ListOf(Record({"id": OPT_INT, "name": STR})))),
    "nat": ListOf(Record({"rule": STR, "target": STR, "to": STR, "proto": STR,
                          "dport": STR}, optional=frozenset({"to", "proto", "dport"}))),
    "offload": MapOf(OPT_BOOL),
}
SPECS["context"] = Record(CONTEXT_FIELDS, optional=frozenset(CONTEXT_FIELDS))
# The list-valued fields; the other fields are objects.
EMPTY_CONTEXT: dict[str, list] = {"neighbours": [], "nat": []}


class BadLine(Exception):
    """Where in a line the value does not fit, and why."""


def _type_names(types: tuple) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             type(None): "null", dict: "an object", list: "a list"}
    return " or ".join(names.get(t, "an object") for t in types if isinstance(t, type))


def check(value, spec, path: str = "") -> None:
    """Raise BadLine when `value` does not match `spec`."""
    if isinstance(spec, tuple):
        _check_alternatives(value, spec, path)
    elif isinstance(spec, ListOf):
        if not isinstance(value, list):
            raise BadLine(f"{path} should be a list")
        for n, item in enumerate(value):
            check(item, spec.item, f"{path}[{n}]")
    elif not isinstance(value, dict):
        raise BadLine(f"{path or 'the line'} should be an object")
    elif isinstance(spec, MapOf):
        for key, item in value.items():
            check(item, spec.value, f"{path}.{key}" if path else key)
    else:
        _check_record(value, spec, path)


def _check_alternatives(value, spec: tuple, path: str) -> None:
    """One of several plain types, or (for an object) a nested spec."""
    plain = tuple(s for s in spec if isinstance(s, type))
    # bool is an int to Python, never to a recording.
    if isinstance(value, plain) and not (isinstance(value, bool) and bool not in plain):
        return
    nested = [s for s in spec if not isinstance(s, type)]
    if nested and isinstance(value, dict):
        check(value, nested[0], path)
        return
    wanted = _type_names(plain) + (" or an object" if nested else "")
    raise BadLine(f"{path or 'the line'} should be {wanted}, not "
                  f"{_type_names((type(value),)) or type(value).__name__}")


def _check_record(value: dict, spec: Record, path: str) -> None:
    for name, sub in spec.fields.items():
        where = f"{path}.{name}" if path else name
        if name in value:
            check(value[name], sub, where)
        elif name not in spec.optional:
            raise BadLine(f"{where} is missing")


@dataclass
class Recording:
    """What a replay needs of a recorded watch, checked. Packet events are not
    kept: they stream to the caller as they are read."""

    start: dict
    stats: dict
    counters: dict
    context: dict


def _lines(stream: BinaryIO) -> Iterator[tuple[int, str]]:
    number = 0
    while True:
        raw = stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE_BYTES:
            raise PktfateError(f"line {number} is longer than {MAX_LINE_BYTES >> 20} MiB: "
                               "this is not a 'watch --json' recording")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PktfateError(f"line {number} is not text (byte {exc.start + 1} is not "
                               "UTF-8): this is not a 'watch --json' recording") from exc
        yield number, text


def _parse(number: int, text: str, cut_short: bool):
    import json

    try:
        obj = json.loads(text)
    except ValueError as exc:
        if cut_short:
            raise PktfateError(f"line {number}, the last, is cut short: the recording is "
                               "truncated; remove that line to replay the rest") from exc
        raise PktfateError(f"line {number} is not JSON: is this a 'watch --json' "
                           "recording?") from exc
    if not isinstance(obj, dict):
        raise PktfateError(f"line {number} is JSON but not an object: is this a "
                           "'watch --json' recording?")
    return obj


def read_recording(stream: BinaryIO, our_version: str,
                   on_event: Callable[[dict, PacketEvent], None]) -> Recording:
    """Parse and check a recorded watch, handing each packet event (with the start
    record) to `on_event`. Raises PktfateError, one sentence."""
    rec = Recording({}, {"matched": {}, "lost": {}}, {}, {})
    pending = None  # one line of lookahead: only the last line may be cut short
    for number, text in _lines(stream):
        if pending is not None:
            _take(rec, *pending, our_version, on_event)
        pending = (number, text)
    if pending is not None:
        _take(rec, *pending, our_version, on_event)
    if not rec.start:
        raise PktfateError("no 'start' line found: record with 'pktfate watch --json > FILE'")
    return rec


def _take(rec: Recording, number: int, text: str, our_version: str,
          on_event: Callable[[dict, PacketEvent], None]) -> None:
    if not text.strip():
        return
    obj = _parse(number, text, cut_short=not text.endswith("\n"))
    kind = obj.get("kind")
    spec = SPECS.get(kind) if isinstance(kind, str) else None
    if spec is None:
        return  # a kind this version does not use (flow, diagnosis, or newer ones)
    try:
        check(obj, spec)
    except BadLine as exc:
        newer = _newer_note(rec.start.get("version"), our_version)
        raise PktfateError(f"line {number} ('{kind}'): {exc}{newer}") from None
    if kind == "start":
        rec.start = obj
    elif kind == "packet":
        if not rec.start:
            raise PktfateError(f"line {number}: a packet before the 'start' line: is this a "
                               "'watch --json' recording?")
        on_event(rec.start, PacketEvent.from_json(obj))
    elif kind == "counters":
        rec.counters = obj["delta"]
        rec.context["firewall"] = obj.get("firewall", [])
    elif kind == "context":
        rec.context.update({key: obj.get(key, EMPTY_CONTEXT.get(key, {}))
                            for key in CONTEXT_FIELDS})
    elif kind == "stats":
        rec.stats = {key: value for key, value in obj.items() if key != "kind"}


def _newer_note(recorded: object, ours: str) -> str:
    def parts(text: str) -> tuple[int, ...]:
        out = []
        for piece in text.split("."):
            digits = "".join(ch for ch in piece if ch.isdigit())
            out.append(int(digits or 0))
        return tuple(out)

    if isinstance(recorded, str) and parts(recorded) > parts(ours):
        return (f" (recorded by pktfate {recorded}, newer than this {ours}: explain it with "
                "that version)")
    return ""
