"""JSON lines: one object per line, every field documented in the README."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from functools import lru_cache
from json.encoder import encode_basestring_ascii
from operator import itemgetter
from typing import Any, Callable, Optional, TextIO

from ..correlate.correlator import Flow
from ..decode.events import (
    PER_PACKET_FIELDS,
    Decoded,
    KernelCount,
    PacketEvent,
    Quoted,
    Shape,
    WatchStats,
)
from ..decode.typed import to_json
from ..diagnosis.evidence import Finding
from ..model.host import HostContext
from ..model.kinds import (
    CSUM_NAMES,
    CsumVerdict,
    Hook,
    Location,
    StateChange,
    hook_name,
    location_text,
    state_text,
    verdict_name,
)
from ..model.protocols import Proto, TcpFlags, flags_text, proto_name

# A packet line is the busiest thing pktfate writes: one per event. Its keys are
# fixed, so the line is a template with the values filled in, each encoded as
# json.dumps would (test_decode checks the two agree); strings repeat (hooks,
# addresses, interfaces), so their encodings are remembered.
_FIELDS = PacketEvent._fields
_PACKET_LINE = ('{"kind": "packet", ' + ", ".join(f'"{name}": %s' for name in _FIELDS)
                + "}\n")
_STRINGS: dict[str, str] = {}
_SKB = _FIELDS.index("skb")


def _quoted_json(quoted: Quoted) -> dict[str, object]:
    return {**quoted._asdict(), "proto": proto_name(quoted.proto)}


# The typed values of an event, as the JSON contract names them (model/).
_NAMED: dict[type, Callable[[Any], object]] = {
    Hook: hook_name, Proto: proto_name, TcpFlags: flags_text, Location: location_text,
    StateChange: state_text, CsumVerdict: verdict_name, Quoted: _quoted_json,
}


def _json_value(value, _str=str, _int=int, _float=float) -> str:
    kind = type(value)
    named = _NAMED.get(kind)
    if named is not None:
        value = named(value)
        kind = type(value)
    if kind is _str:
        text = _STRINGS.get(value)
        if text is None:
            if len(_STRINGS) >= 65536:
                _STRINGS.clear()
            text = _STRINGS[value] = encode_basestring_ascii(value)
        return text
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is _float:
        return _seconds_text(value)
    if kind is _int:
        return repr(value)
    return json.dumps(value)


def _seconds_text(seconds: float) -> str:
    """A time in seconds as packet lines write it: to the microsecond, always six
    decimals (1796511641.748770, the same number json.dumps writes as
    1796511641.74877). Taken from the whole microseconds as two integers, which
    formats at a third of the cost of a float's shortest repr."""
    if not seconds >= 0:  # negative, or not a number: not a time pktfate makes
        return repr(seconds)
    whole, micro = divmod(round(seconds * 1e6), 1_000_000)
    return f"{whole}.{micro:06d}"


# What changes from one packet of a flow to the next; the other fields (quoted
# aside: ICMP errors take the full line) make a line shape, encoded once into a
# template with a positional placeholder for each per-packet field that has a
# value. Which per-packet fields are null is part of the shape. Their values are
# numbers, or strings pktfate makes that never need escaping (the checksum
# verdict, the skb address in hex).
#
# Templates are bytes, written to the byte stream under the text one: formatting
# bytes costs about 60% of formatting the same str here, and nothing is left to
# encode. Bytes formatting takes bytes for %s, so a template's values come from a
# getter made for its fields, which takes the checksum verdict's name as bytes.
_PER_PACKET = PER_PACKET_FIELDS
_shape_of = itemgetter(*(n for n, name in enumerate(_FIELDS)
                         if name not in _PER_PACKET and name != "quoted"))
_per_packet_of = itemgetter(*map(_FIELDS.index, _PER_PACKET))
# A shape's template and the getter of the values it takes, in order; None where
# a per-packet value is of a type the placeholders do not encode as json.dumps
# would (then the line is made whole).
LineTemplate = Optional[tuple[bytes, Callable[[PacketEvent], tuple]]]
_LINES: dict[tuple, LineTemplate] = {}
MAX_LINE_SHAPES = 4096
# A float (the time) takes two placeholders: whole seconds and microseconds, as
# _seconds_text writes it; the skb's address is written in hex, as a string.
_PLACEHOLDER: dict[object, str] = {float: "%d.%06d", int: "%d", CsumVerdict: '"%s"',
                                   "skb": '"%s"'}
# Each checksum verdict's name, as bytes (the one per-packet value with a name).
_VERDICT_BYTES = {verdict: verdict_name(verdict).encode("ascii") for verdict in
                  [*CSUM_NAMES, *(CsumVerdict(n) for n in range(len(CSUM_NAMES) + 1, 256))]}


@lru_cache(maxsize=256)
class _HexCache(dict[int, bytes]):
    """An skb's address -> its hex text as bytes, made on first use: formatting it
    costs 130 ns a packet here, the lookup 17 (the kernel reuses a few thousand
    addresses). Bounded: a long watch starts again."""

    def __missing__(self, skb: int) -> bytes:
        if len(self) >= 65536:
            self.clear()
        text = self[skb] = b"%#x" % skb
        return text


_HEX = _HexCache()


def _getter(places: tuple[int, ...], kinds: tuple[object, ...]) -> Callable[[PacketEvent], tuple]:
    """event -> the tuple of the values a template takes, strings as bytes, a time
    as its whole seconds and microseconds: a function written for these places in
    the event (our own field numbers, not input), one subscript per value, the
    cheapest way Python has. Which per-packet fields a line has, and of what type,
    comes in a handful of combinations: the line templates of every flow share
    them (a function per template weighed 20 objects, and a flood from as many
    source ports as flows made one a packet)."""
    lines, items = [], []
    for place, kind in zip(places, kinds):
        if kind is float:
            lines.append(f"    s{place}, us{place} = divmod(round(e[{place}] * 1e6), 1_000_000)\n")
            items.append(f"s{place}, us{place}")
        else:
            items.append(f"V[e[{place}]]" if kind is CsumVerdict else
                         f"X[e[{place}]]" if kind == "skb" else f"e[{place}]")
    namespace: dict = {"V": _VERDICT_BYTES, "X": _HEX}
    exec(f"def get(e):\n{''.join(lines)}    return ({', '.join(items)},)\n", namespace)
    return namespace["get"]


def _line_template(ev: PacketEvent) -> LineTemplate:
    parts, places, kinds = [], [], []
    for place, (name, value) in enumerate(zip(_FIELDS, ev)):
        if name in _PER_PACKET and value is not None:
            kind = "skb" if place == _SKB else type(value)
            text = _PLACEHOLDER.get(kind)
            if text is None:
                return None
            places.append(place)
            kinds.append(kind)
        else:
            text = _json_value(value).replace("%", "%%")
        parts.append(f'"{name}": {text}')
    line = '{"kind": "packet", ' + ", ".join(parts) + "}\n"
    return line.encode("ascii"), _getter(tuple(places), tuple(kinds))  # _json_value's: ASCII


def _remember(templates: dict, key: Any, ev: PacketEvent) -> LineTemplate:
    """The line template of `key`'s events, made from its first one and remembered
    (a table of MAX_LINE_SHAPES at most: a scan of many flows starts it again)."""
    if len(templates) >= MAX_LINE_SHAPES:
        templates.clear()
    template = templates[key] = _line_template(ev)
    return template


def _packet_bytes(ev: PacketEvent) -> bytes:
    """The JSON line of one packet event, newline included, as bytes."""
    if ev.quoted is None:
        shape = (_shape_of(ev), tuple(map(type, _per_packet_of(ev))))
        try:
            template = _LINES[shape]
        except KeyError:
            template = _remember(_LINES, shape, ev)
        if template is not None:
            return template[0] % template[1](ev)
    values = list(ev)
    if values[_SKB] is not None:
        values[_SKB] = f"{values[_SKB]:#x}"
    return (_PACKET_LINE % tuple(map(_json_value, values))).encode("ascii")


def packet_line(ev: PacketEvent) -> str:
    """The JSON line of one packet event, newline included."""
    return _packet_bytes(ev).decode("ascii")


class JsonOutput:
    """One JSON object per line; the README documents every field."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        # Packet lines go to the byte stream under the text one (stdout's buffer);
        # the other lines are text, each flushed at once (_emit), so that the two
        # never overtake each other. A stream of text only takes them decoded.
        binary = getattr(stream, "buffer", None)
        self._write: Callable[[bytes], Any] = binary.write if binary is not None else \
            (lambda data: stream.write(data.decode("ascii")))
        # The line template of each shape the decoder names (decode.events.Shape),
        # with and without an skb: within a shape, only whether an event has an
        # skb changes which per-packet fields are null.
        self._with_skb: dict[Shape, LineTemplate] = {}
        self._without_skb: dict[Shape, LineTemplate] = {}

    def start(self, record: dict) -> None:
        self._emit(dict({"kind": "start"}, **record))

    def events(self, batch: Iterable[Decoded],
               _firsts: Iterable[bool] = ()) -> None:
        """The lines of a batch of events (one drain of the ring buffer), written in
        one call; flush() after each drain sends them on."""
        with_skb, without_skb = self._with_skb, self._without_skb
        lines: list[bytes] = []
        line = lines.append
        for ev, shape in batch:
            if shape is None:
                line(_packet_bytes(ev))
                continue
            templates = with_skb if ev.skb is not None else without_skb
            try:
                template = templates[shape]
            except KeyError:
                template = _remember(templates, shape, ev)
            if template is not None:
                try:
                    line(template[0] % template[1](ev))
                    continue
                except (KeyError, TypeError):
                    # A per-packet field null where the shape's first event had a
                    # value (the kernel judged no checksum this time): made whole.
                    pass
            line(_packet_bytes(ev))
        self._write(b"".join(lines))

    def flush(self) -> None:
        self.stream.flush()

    def finish(self, flows: list[Flow], findings: list[Finding], stats: WatchStats,
               counters: dict[str, int], context: HostContext) -> None:
        for flow in flows:
            self._emit(flow_json(flow))
        self._emit({"kind": "stats", **stats_json(stats)})
        host = to_json(context)
        self._emit({"kind": "counters", "delta": counters, "firewall": host.pop("firewall")})
        self._emit({"kind": "context", **host})
        self._emit({"kind": "diagnosis", "findings": [finding_json(f) for f in findings]})

    def _emit(self, obj: dict) -> None:
        self.stream.write(json.dumps(obj) + "\n")
        self.stream.flush()


def stats_json(stats: WatchStats) -> dict[str, object]:
    """The stats line's fields: per-hook counts by the hooks' names."""
    def by_name(counts: Mapping[Hook, int]) -> dict[str, int]:
        return {hook_name(hook): n for hook, n in counts.items()}
    return {"matched": by_name(stats.matched), "lost": by_name(stats.lost),
            "sampled": by_name(stats.sampled), "agg_full": stats.agg_full,
            "stopping_events": stats.stopping_events,
            "kernel_counts": [count_json(c) for c in stats.kernel_counts],
            "flows_evicted": stats.flows_evicted}


def count_json(count: KernelCount) -> dict[str, object]:
    """An entry of the kernel's exact counts, named as events are."""
    return {**asdict(count), "hook": hook_name(count.hook), "proto": proto_name(count.proto),
            "tcp_flags": flags_text(count.tcp_flags) if count.tcp_flags is not None else None}


# Counters keyed by records: in JSON, lists of the key's fields and `count`.
RECORD_COUNTERS = ("drop_sites", "icmp_errors_sent", "arrived_on", "errors_in", "rewrites")
# Counters keyed by an enum whose JSON name is not its value.
_NAMED_KEYS = {"checksums": verdict_name}


def flow_json(flow: Flow) -> dict[str, object]:
    """A flow's line: every public field, counters as objects (or lists of records)."""
    out: dict[str, object] = {"kind": "flow"}
    for name, value in flow.__dict__.items():
        if name.startswith("_"):
            continue
        if name in RECORD_COUNTERS:
            out[name] = [{**_record_json(key), "count": n} for key, n in value.items()]
        elif name in _NAMED_KEYS:
            out[name] = {_NAMED_KEYS[name](key): n for key, n in value.items()}
        elif name == "proto":
            out[name] = proto_name(value)
        else:
            out[name] = dict(value) if isinstance(value, Counter) else value
    return out


def _record_json(key: Any) -> dict[str, object]:
    fields: dict[str, object] = key._asdict()
    hook = fields.get("hook")
    if isinstance(hook, Hook):
        fields["hook"] = hook_name(hook)
    return fields


def finding_json(finding: Finding) -> dict[str, object]:
    """A finding as the diagnosis line lists it (the README's fields)."""
    return {"cause": finding.cause, "summary": finding.summary,
            "flows": [{**asdict(ref), "flows": list(ref.flows)} for ref in finding.flows],
            "evidence": finding.evidence, "fix": finding.fix,
            "confidence": finding.confidence, "count": finding.count}
