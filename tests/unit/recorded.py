"""Build recorded evidence: PacketEvents as a watch on the server would see them."""

from __future__ import annotations

import json

from pktfate.correlate.correlator import Correlator
from pktfate.decode.events import PacketEvent
from pktfate.decode.recording import context_of_json, event_of_json
from pktfate.decode.typed import parse
from pktfate.diagnosis.diagnose import diagnose
from pktfate.diagnosis.evidence import Evidence
from pktfate.model.host import FirewallRule, HostContext
from pktfate.output.jsonl import packet_line

CLIENT, SERVER = "10.0.1.2", "10.0.2.2"
# An event as its JSON line has it: tests write fields the way recordings do, and
# the recording reader makes the typed event of them.
_BASE = {"ts": 1000.0, "hook": "xdp", "iface": "eth0", "netns": 1, "family": 4,
         "proto": "tcp", "src": CLIENT, "dst": SERVER, "sport": 40000, "dport": 80,
         "length": 60, "ttl": 63, "ip_id": 1, "tcp_flags": "S", "seq": 100, "ack": 0,
         "icmp_type": None, "icmp_code": None, "reason": None, "location": None,
         "state": None, "checksum": "good", "csum_field": 0, "skb": None, "quoted": None,
         "tracked": False}


def event_json(ev: PacketEvent) -> dict:
    """A packet event as its JSON line's object (what the output writes)."""
    return json.loads(packet_line(ev))


def event(**fields) -> PacketEvent:
    """A typed event from JSON-style fields over the base SYN (a quote may come
    typed, as decode.events.quoted_packet makes it)."""
    quoted = fields.pop("quoted", None)
    typed = quoted is not None and not isinstance(quoted, dict)
    ev = event_of_json({**_BASE, **fields, "quoted": None if typed else quoted})
    return ev._replace(quoted=quoted) if typed else ev


class Recorder:
    def __init__(self):
        self.events: list[PacketEvent] = []
        self.ts = 1000.0

    def add(self, **fields) -> PacketEvent:
        self.ts += 0.001
        ev = event(ts=self.ts, **fields)
        self.events.append(ev)
        return ev

    def syn(self, n: int, hooks=("xdp", "tc-ingress"), sport: int = 40000, **fate) -> list:
        syns = []
        for i in range(n):
            ident = {"ip_id": 100 + i, "seq": 1000 + i * 7, "sport": sport}
            for hook in hooks:
                syns.append(self.add(hook=hook, **ident))
            for hook, extra in fate.items():
                self.add(hook=hook.replace("_", "-"), skb="0x1", **ident, **extra)
        return syns

    def ping(self, n: int, answered: bool = True) -> None:
        for i in range(n):
            common = {"proto": "icmp", "tcp_flags": None, "seq": None, "ack": None,
                      "checksum": None, "sport": 7, "dport": i}
            self.add(hook="xdp", icmp_type=8, icmp_code=0, ip_id=500 + i, **common)
            if answered:
                self.add(hook="tc-egress", src=SERVER, dst=CLIENT, icmp_type=0, icmp_code=0,
                         ip_id=900 + i, **common)

    def findings(self, ports=(80,), counters=None, local=frozenset({SERVER}), **context):
        """Diagnose what was recorded; `context` as the watch gathers it at the end
        (firewall, routes, offload); `local`: this host's addresses."""
        correlator = Correlator(set(local), ports)
        for ev in self.events:
            correlator.feed(ev)
        return diagnose(Evidence(correlator.finish(), counters or {}, ports,
                                 host=host_context(**context)))


def host_context(firewall=(), **context) -> HostContext:
    """The host's context from JSON-style parts, as a recording holds them."""
    return context_of_json(context, parse(tuple[FirewallRule, ...], list(firewall)))
