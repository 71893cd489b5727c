"""Read a recorded `watch --json` output back, defensively: a recording is user
input. Every line is checked against what the replay uses, so that a binary file,
a line cut short, a huge line or a field of the wrong type ends in one clear
sentence (a PktfateError), never in a traceback deep in the correlator.

Lines of kinds this version does not know, and fields it does not use, are
ignored: a newer pktfate's recording replays as far as its fields keep their
meaning.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO, Optional, Union

from ..errors import PktfateError
from ..model.host import FirewallRule, HostContext, HostIdentity
from ..model.kinds import CsumVerdict, Hook, Location, StateChange
from ..model.protocols import Proto, TcpFlags
from .events import KernelCount, PacketEvent, Quoted, WatchStats
from .names import flags_of, hook_of, location_of, proto_of, state_of, verdict_of
from .typed import BadLine, parse

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

    fields: dict[str, object]
    optional: frozenset[str] = field(default_factory=frozenset)


INT = (int,)
NUMBER = (int, float)
STR = (str,)
BOOL = (bool,)

# What each of pktfate's types is in the JSON: its named values are strings.
_JSON_TYPES: dict[object, tuple[type, ...]] = {
    int: INT, float: NUMBER, str: STR, bool: BOOL, Hook: STR, Proto: STR, TcpFlags: STR,
    Location: STR, StateChange: STR, CsumVerdict: STR}


def _spec_of(cls: type, optional: frozenset[str] = frozenset(),
             written_as: dict[str, tuple[type, ...]] | None = None) -> Record:
    """A line's spec from the NamedTuple that types it: the one description."""
    specs: dict[str, object] = {}
    for name, hint in typing.get_type_hints(cls).items():
        options = typing.get_args(hint) if typing.get_origin(hint) is Union else (hint,)
        alternatives: tuple[object, ...] = ()
        for option in options:
            if option is type(None):
                alternatives += (type(None),)
            elif (written_as or {}).get(name):
                alternatives += (written_as or {})[name]
            elif option in _JSON_TYPES:
                alternatives += _JSON_TYPES[option]
            else:  # a nested record
                alternatives += (_spec_of(option),)
        specs[name] = alternatives
    return Record(specs, optional)


# Every field of PacketEvent, with the types the replay accepts (the skb's
# address is written in hex).
PACKET = _spec_of(PacketEvent, frozenset({"quoted", "tracked"}), {"skb": STR})
KERNEL_COUNT = _spec_of(KernelCount)

SPECS = {
    "start": Record({}),  # checked and built from RecordedStart
    "packet": PACKET,
    "stats": Record({"matched": MapOf(INT), "lost": MapOf(INT), "sampled": MapOf(INT),
                     "kernel_counts": ListOf(KERNEL_COUNT), "agg_full": INT,
                     "flows_evicted": INT},
                    optional=frozenset({"sampled", "kernel_counts", "agg_full",
                                        "flows_evicted"})),
    "counters": Record({"delta": MapOf(INT), "firewall": ListOf(object)},
                       optional=frozenset({"firewall"})),
    # The host's context: checked and built from its record (model/host.py).
    "context": Record({}),
}


def check(value: object, spec: object, path: str = "") -> None:
    """Raise BadLine when `value` does not match `spec`."""
    if spec is object:
        return
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
        assert isinstance(spec, Record)
        _check_record(value, spec, path)


def _type_names(types: tuple[object, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             type(None): "null", dict: "an object", list: "a list"}
    return " or ".join(names.get(t, "an object") for t in types if isinstance(t, type))


def _check_alternatives(value: object, spec: tuple[object, ...], path: str) -> None:
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


def _check_record(value: dict[str, object], spec: Record, path: str) -> None:
    for name, sub in spec.fields.items():
        where = f"{path}.{name}" if path else name
        if name in value:
            check(value[name], sub, where)
        elif name not in spec.optional:
            raise BadLine(f"{where} is missing")


@dataclass(frozen=True)
class RecordedStart:
    """What a replay needs of the start line: the watch's own addresses and ports,
    the version that recorded it, and what its kernel lacked."""

    local_addrs: tuple[str, ...]
    ports: tuple[int, ...]
    version: Optional[str] = None
    missing: tuple[str, ...] = ()
    netns: Optional[int] = None  # the watched namespace (a report names it)
    protos: tuple[str, ...] = ()  # the protocol filter
    host: Optional[HostIdentity] = None  # where it was made (recordings before 0.2: None)


@dataclass
class Recording:
    """What a replay needs of a recorded watch, checked. Packet events are not
    kept: they stream to the caller as they are read."""

    start: Optional[RecordedStart]
    stats: WatchStats
    counters: dict[str, int]
    context: HostContext


def _lines(stream: BinaryIO) -> Iterator[tuple[int, str]]:
    number = 0
    while True:
        try:
            raw = stream.readline(MAX_LINE_BYTES + 1)
        except OSError as exc:  # /proc/self/mem and the like: not a file to read
            raise PktfateError(f"line {number + 1} cannot be read ({exc.strerror}): this is "
                               "not a 'watch --json' recording") from None
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


def _parse(number: int, text: str, cut_short: bool) -> dict[str, Any]:
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
                   on_event: OnEvent) -> tuple[RecordedStart, Recording]:
    """Parse and check a recorded watch, handing each packet event (with the start
    record) to `on_event`. Raises PktfateError, one sentence."""
    rec = Recording(None, WatchStats(), {}, HostContext())
    pending = None  # one line of lookahead: only the last line may be cut short
    for number, text in _lines(stream):
        if pending is not None:
            _take(rec, *pending, our_version, on_event)
        pending = (number, text)
    if pending is not None:
        _take(rec, *pending, our_version, on_event)
    if rec.start is None:
        raise PktfateError("no 'start' line found: record with 'pktfate watch --json > FILE'")
    return rec.start, rec


def _take(rec: Recording, number: int, text: str, our_version: str,
          on_event: OnEvent) -> None:
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
        newer = _newer_note(rec.start.version if rec.start else None, our_version)
        raise PktfateError(f"line {number} ('{kind}'): {exc}{newer}") from None
    try:
        _TAKERS[str(kind)](rec, obj, number, on_event)
    except (BadLine, ValueError) as exc:
        raise PktfateError(f"line {number} ('{kind}'): {exc}") from None


def _take_start(rec: Recording, obj: dict[str, Any], _number: int, _on_event: OnEvent) -> None:
    rec.start = parse(RecordedStart, obj)


def _take_packet(rec: Recording, obj: dict[str, Any], number: int, on_event: OnEvent) -> None:
    if rec.start is None:
        raise PktfateError(f"line {number}: a packet before the 'start' line: is this a "
                           "'watch --json' recording?")
    on_event(rec.start, event_of_json(obj))


def _take_counters(rec: Recording, obj: dict[str, Any], _number: int,
                   _on_event: OnEvent) -> None:
    rec.counters = obj["delta"]
    rules = parse(tuple[FirewallRule, ...], obj.get("firewall", []), "firewall")
    rec.context = replace(rec.context, firewall=rules)


def _take_context(rec: Recording, obj: dict[str, Any], number: int,
                  _on_event: OnEvent) -> None:
    rec.context = context_of_json(obj, rec.context.firewall, number)


def _take_stats(rec: Recording, obj: dict[str, Any], _number: int, _on_event: OnEvent) -> None:
    rec.stats = WatchStats(
        matched=_by_hook(obj["matched"]), lost=_by_hook(obj["lost"]),
        sampled=_by_hook(obj.get("sampled", {})), agg_full=obj.get("agg_full", 0),
        kernel_counts=tuple(count_of_json(entry) for entry in obj.get("kernel_counts", [])),
        stopping_events=obj.get("stopping_events", 0),
        flows_evicted=obj.get("flows_evicted", 0))


def _by_hook(counts: dict[str, int]) -> dict[Hook, int]:
    """Per-hook counts by the hooks' names; a newer version's hooks are left out."""
    found = {}
    for name, n in counts.items():
        try:
            found[hook_of(name)] = n
        except ValueError:
            continue
    return found


OnEvent = Callable[[RecordedStart, PacketEvent], None]
_TAKERS: dict[str, Callable[[Recording, dict[str, Any], int, OnEvent], None]] = {
    "start": _take_start, "packet": _take_packet, "counters": _take_counters,
    "context": _take_context, "stats": _take_stats}


def context_of_json(obj: dict[str, Any], firewall: tuple[FirewallRule, ...] = (),
                    number: int = 0) -> HostContext:
    """A context line (or the live watch's gathered context) as its record."""
    try:
        context: HostContext = parse(HostContext, {k: v for k, v in obj.items()
                                                   if k not in ("kind", "firewall")})
    except BadLine as exc:
        raise PktfateError(f"line {number} ('context'): {exc}" if number else
                           f"the host's context: {exc}") from None
    return replace(context, firewall=firewall)


def _state(text: str) -> StateChange:
    old, arrow, new = text.partition(">")
    if not arrow:
        raise ValueError(f"state {text!r} is not OLD>NEW")
    return StateChange(state_of(old), state_of(new))


def event_of_json(obj: dict[str, Any]) -> PacketEvent:
    """A packet line (checked against PACKET) as the typed event the decoder makes;
    ValueError for a name pktfate does not write."""
    q = obj.get("quoted")
    flags, location, state = obj["tcp_flags"], obj["location"], obj["state"]
    checksum, skb = obj["checksum"], obj["skb"]
    return PacketEvent(
        ts=obj["ts"], hook=hook_of(obj["hook"]), iface=obj["iface"], netns=obj["netns"],
        family=obj["family"], proto=proto_of(obj["proto"]), src=obj["src"], dst=obj["dst"],
        sport=obj["sport"], dport=obj["dport"], length=obj["length"], ttl=obj["ttl"],
        ip_id=obj["ip_id"], tcp_flags=flags_of(flags) if flags is not None else None,
        seq=obj["seq"], ack=obj["ack"], icmp_type=obj["icmp_type"],
        icmp_code=obj["icmp_code"], reason=obj["reason"],
        location=location_of(location) if location is not None else None,
        state=_state(state) if state is not None else None,
        checksum=verdict_of(checksum) if checksum is not None else None,
        csum_field=obj["csum_field"], skb=int(skb, 16) if skb is not None else None,
        quoted=Quoted(proto_of(q["proto"]), q["src"], q["dst"], q["ttl"], q["sport"],
                      q["dport"], q["seq"]) if q is not None else None,
        tracked=bool(obj.get("tracked")))


def count_of_json(obj: dict[str, Any]) -> KernelCount:
    """An entry of the stats line's kernel_counts (checked against KERNEL_COUNT)."""
    flags = obj["tcp_flags"]
    return KernelCount(hook_of(obj["hook"]), proto_of(obj["proto"]), obj["src"], obj["dst"],
                       obj["sport"], obj["dport"],
                       flags_of(flags) if flags is not None else None, obj["icmp_type"],
                       obj["reason"], obj["count"])


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
