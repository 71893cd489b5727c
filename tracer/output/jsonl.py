"""JSON lines: one object per line, every field documented in the README."""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii
from operator import itemgetter
from typing import Any, Callable, Optional, TextIO

from ..correlate.correlator import Flow, PacketRecord
from ..decode.events import PER_PACKET_FIELDS, PacketEvent, Shape
from ..diagnosis.evidence import Finding

# A packet line is the busiest thing pktfate writes: one per event. Its keys are
# fixed, so the line is a template with the values filled in, each encoded as
# json.dumps would (test_decode checks the two agree); strings repeat (hooks,
# addresses, interfaces), so their encodings are remembered.
_PACKET_LINE = ('{"kind": "packet", '
                + ", ".join(f'"{name}": %s' for name in PacketEvent.__dataclass_fields__)
                + "}\n")
_STRINGS: dict[str, str] = {}


def _json_value(value, _str=str, _int=int, _float=float) -> str:
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
    if kind is _int or kind is _float:
        return repr(value)
    return json.dumps(value)


# What changes from one packet of a flow to the next; the other fields (quoted
# aside: ICMP errors take the full line) make a line shape, encoded once into a
# template with a positional placeholder for each per-packet field that has a
# value, filled by one itemgetter over the event's own dict (positional filling
# costs two thirds of filling by name). Which per-packet fields are null is part
# of the shape. Their values are numbers, or strings pktfate makes that never
# need escaping (the checksum verdict, the skb address in hex).
_PER_PACKET = PER_PACKET_FIELDS
_SHAPE_FIELDS = tuple(name for name in PacketEvent.__dataclass_fields__
                      if name not in _PER_PACKET and name != "quoted")
_shape_of = itemgetter(*_SHAPE_FIELDS)
_per_packet_of = itemgetter(*_PER_PACKET)
# A shape's template and the getter of the values it takes, in order; None where
# a per-packet value is of a type the placeholders do not encode as json.dumps
# would (then the line is made whole).
LineTemplate = Optional[tuple[str, Callable[[dict], Any]]]
_LINES: dict[tuple, LineTemplate] = {}
MAX_LINE_SHAPES = 4096
_PLACEHOLDER = {float: "%r", int: "%d", str: '"%s"'}


def _line_template(fields: dict) -> LineTemplate:
    parts, names = [], []
    for name, value in fields.items():
        if name in _PER_PACKET and value is not None:
            text = _PLACEHOLDER.get(type(value))
            if text is None:
                return None
            names.append(name)
        else:
            text = _json_value(value).replace("%", "%%")
        parts.append(f'"{name}": {text}')
    # One name: itemgetter gives the value itself, which % takes as the only
    # argument (never a tuple: the per-packet values are numbers and strings).
    return '{"kind": "packet", ' + ", ".join(parts) + "}\n", itemgetter(*names)


def packet_line(ev: PacketEvent) -> str:
    """The JSON line of one packet event, newline included."""
    fields = ev.__dict__
    if fields["quoted"] is None:
        shape = (_shape_of(fields), tuple(map(type, _per_packet_of(fields))))
        try:
            template = _LINES[shape]
        except KeyError:
            if len(_LINES) >= MAX_LINE_SHAPES:
                _LINES.clear()
            template = _LINES[shape] = _line_template(fields)
        if template is not None:
            return template[0] % template[1](fields)
    return _PACKET_LINE % tuple(map(_json_value, fields.values()))


class JsonOutput:
    """One JSON object per line; the README documents every field."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        # The line template of each shape the decoder names (decode.events.Shape),
        # with and without an skb: within a shape, only whether an event has an
        # skb changes which per-packet fields are null.
        self._with_skb: dict[Shape, LineTemplate] = {}
        self._without_skb: dict[Shape, LineTemplate] = {}

    def start(self, record: dict) -> None:
        self._emit(dict({"kind": "start"}, **record))

    def event(self, ev: PacketEvent, _rec: PacketRecord | None, _first: bool,
              shape: Shape | None = None) -> None:
        # Not flushed one by one: flush() after each drain of the ring buffer
        # writes a batch in one call (a few milliseconds apart).
        if shape is None:
            self.stream.write(packet_line(ev))
            return
        fields = ev.__dict__
        templates = self._with_skb if fields["skb"] is not None else self._without_skb
        try:
            template = templates[shape]
        except KeyError:
            if len(templates) >= MAX_LINE_SHAPES:
                templates.clear()
            template = templates[shape] = _line_template(fields)
        self.stream.write(template[0] % template[1](fields) if template is not None
                          else packet_line(ev))

    def flush(self) -> None:
        self.stream.flush()

    def finish(self, flows: list[Flow], findings: list[Finding], stats: dict,
               counters: dict[str, int], context: dict) -> None:
        for flow in flows:
            self._emit(flow.to_json())
        self._emit({"kind": "stats", **stats})
        self._emit({"kind": "counters", "delta": counters,
                    "firewall": context.get("firewall", [])})
        self._emit({"kind": "context",
                    **{key: value for key, value in context.items() if key != "firewall"}})
        self._emit({"kind": "diagnosis", "findings": [f.to_json() for f in findings]})

    def _emit(self, obj: dict) -> None:
        self.stream.write(json.dumps(obj) + "\n")
        self.stream.flush()
