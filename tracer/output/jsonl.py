"""JSON lines: one object per line, every field documented in the README."""

from __future__ import annotations

import json
from typing import TextIO

from ..correlate.correlator import Flow, PacketRecord
from ..decode.events import PacketEvent
from ..diagnosis.evidence import Finding


class JsonOutput:
    """One JSON object per line; the README documents every field."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def start(self, record: dict) -> None:
        self._emit(dict({"kind": "start"}, **record))

    def event(self, ev: PacketEvent, _rec: PacketRecord | None, _first: bool) -> None:
        # Not flushed one by one: flush() after each drain of the ring buffer
        # writes a batch in one call (a few milliseconds apart).
        self.stream.write(json.dumps(ev.to_json()) + "\n")

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
