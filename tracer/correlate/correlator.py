"""Follow each packet across hooks to its fate, and gather flows.

A packet is recognised at every hook by what does not change on the way: the
addresses, ports, IPv4 id, TCP sequence number and flags, ICMP echo id and
sequence. Pure logic: fed decoded PacketEvents, live or replayed from JSON.
"""

from __future__ import annotations

import sys
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from ..decode.events import Decoded, PacketEvent, Shape

ARRIVAL_HOOKS = ("xdp", "tc-ingress")
MAX_OPEN_PACKETS = 8192  # packets still waiting for a fate; the oldest give way
MAX_FLOWS = 16384  # about 4 KB each: a bounded ~64 MB, the oldest give way
MAX_ROUTES = 4096  # shapes remembered (_route): as many as the decoder keeps
RECENT_SEGMENTS = 32  # per flow and direction: enough to see a segment sent again

ECHO_REQUEST = {"icmp": 8, "icmpv6": 128}
ECHO_REPLY = {"icmp": 0, "icmpv6": 129}

# Fates, most final first: a later, weaker sighting never overrides a stronger one.
TCP_RECEIVE = frozenset({"tcp_v4_rcv", "tcp_v6_rcv"})  # where TCP frees what no socket wants
FATE_RANK = {"reset": 6, "icmp-error": 6, "rejected": 6, "dropped": 5, "answered": 4,
             "forwarded": 3, "delivered": 2, "sent": 1, "unanswered": 0, "not-forwarded": 0}


class Arrival(NamedTuple):
    """Where a packet was first seen coming in."""

    hook: str
    iface: str | None


class DropSite(NamedTuple):
    reason: str
    function: str  # the kernel function that freed the packet, without offset


class IcmpCode(NamedTuple):
    type: int
    code: int

    def __str__(self) -> str:
        return f"{self.type}/{self.code}"


class ErrorIn(NamedTuple):
    """An ICMP error received about one of the flow's packets, and who sent it."""

    type: int
    code: int
    sender: str
    ttl: int

    @property
    def icmp(self) -> IcmpCode:
        return IcmpCode(self.type, self.code)


class Rewrite(NamedTuple):
    """What NAT made of a flow's packets on this host, seen by following them by
    their skb: "dnat" (destination now addr:port) or "snat" (source now addr:port)."""

    kind: str
    addr: str
    port: int | None


# Counters keyed by records: in JSON, lists of the key's fields and `count`.
RECORD_COUNTERS = ("drop_sites", "icmp_errors_sent", "arrived_on", "errors_in", "rewrites")


def packet_key(ev: PacketEvent) -> tuple:
    """(what the packet's shape fixes, IPv4 id, sequence): the first part is the
    same for every event of a shape, so that a Route keeps it (Route.prefix)."""
    return (_key_prefix(ev), ev.ip_id, ev.seq)


def _key_prefix(ev: PacketEvent) -> str:
    """Protocol, addresses, ports, TCP flags and ICMP type, as one interned string:
    a string keeps its hash and an interned one compares by identity, where a tuple
    of them is hashed anew in every lookup of a packet (half the lookup's cost)."""
    icmp_type = ev.icmp_type if ev.hook != "icmp-error-sent" else None
    return sys.intern(f"{ev.proto} {ev.src} {ev.dst} {ev.sport} {ev.dport} {ev.tcp_flags} "
                      f"{icmp_type}")


class Route:
    """What the correlator makes of every event of one shape (decode.events.Shape),
    worked out once: its direction, flow, handler, the part of the packet key the
    shape fixes, and the named tuples its handlers count by."""

    __slots__ = ("hook", "direction", "flow_key", "handler", "prefix", "tcp", "special",
                 "arrival", "site", "answers", "request", "syn", "flags", "echo")

    def __init__(self, correlator: Correlator, ev: PacketEvent):
        self.hook = ev.hook
        self.direction = correlator._direction(ev)
        self.flow_key = correlator._flow_key(ev, self.direction)
        self.handler = correlator._handlers.get(ev.hook, correlator._no_handler)
        self.prefix = _key_prefix(ev)
        self.tcp = ev.proto == "tcp"
        # Events feed() does not take by the common path: state changes (no packet)
        # and packets the kernel followed by their skb after a rewrite.
        self.special = ev.hook == "tcp-state" or ev.tracked
        self.arrival = Arrival(ev.hook, ev.iface)
        self.site = DropSite(ev.reason or "UNKNOWN", (ev.location or "?").split("+")[0])
        # An arrival that may answer what this host sent (a client's SYN, a ping).
        self.answers = bool(ev.tcp_flags or ev.is_icmp)
        # A packet that asks for an answer (a SYN, an echo request): its record is
        # noted where the answer will look for it (Correlator.requests), and one
        # that none came to was "unanswered".
        self.flags = ev.tcp_flags
        self.echo = ev.icmp_type if ev.proto in ECHO_REQUEST else None  # ICMP's own type
        self.syn = ev.tcp_flags == "S"
        self.request = self.syn or (
            ev.icmp_type is not None and ev.icmp_type == ECHO_REQUEST.get(ev.proto))


class PacketRecord:
    """One packet followed across hooks: where it was seen and its fate so far.
    A plain class with slots: one is made per packet, the busiest allocation of
    the correlator."""

    __slots__ = ("key", "first", "direction", "request", "syn", "hooks", "fate", "reason",
                 "location", "bad_csum", "rewritten")

    def __init__(self, key: tuple, first: PacketEvent, direction: str, request: bool = False,
                 syn: bool = False):
        self.key = key
        self.first = first
        self.direction = direction  # "in", "out", "through"
        self.request = request  # it asks for an answer: a SYN, an echo request
        self.syn = syn  # it is a SYN
        self.hooks: list[str] = []
        self.fate: str | None = None
        self.reason: str | None = None
        self.location: str | None = None
        self.bad_csum = False
        self.rewritten = False  # its rewrites are counted on its flow already


@dataclass
class Flow:
    """Counts for one conversation between this host and a peer."""

    id: int
    proto: str
    local: str
    local_port: int | None
    peer: str
    peer_port: int | None
    first_ts: float
    last_ts: float = 0.0
    packets_in: int = 0
    packets_out: int = 0
    syn_in: int = 0
    syn_out: int = 0
    synack_out: int = 0
    synack_in: int = 0
    rst_in: int = 0
    rst_out: int = 0
    echo_requests_in: int = 0
    echo_replies_out: int = 0
    echo_requests_out: int = 0
    echo_replies_in: int = 0
    established: int = 0
    kernel_resets: int = 0
    forwarded: int = 0
    bad_csum: int = 0
    fates: Counter = field(default_factory=Counter)
    drops: Counter = field(default_factory=Counter)  # reason -> count
    drop_locations: Counter = field(default_factory=Counter)  # function -> count
    drop_sites: Counter = field(default_factory=Counter)  # DropSite -> count
    drop_ifaces: Counter = field(default_factory=Counter)  # interface of dropped packets
    syn_drops: Counter = field(default_factory=Counter)  # reason -> SYNs dropped for it
    icmp_errors_sent: Counter = field(default_factory=Counter)  # IcmpCode -> count
    arrived_on: Counter = field(default_factory=Counter)  # Arrival -> count
    checksums: Counter = field(default_factory=Counter)  # verdict at arrival -> count
    peer_ttls: Counter = field(default_factory=Counter)
    reset_ttls: Counter = field(default_factory=Counter)  # TTLs of the RSTs that came in
    error_ttls: Counter = field(default_factory=Counter)  # TTLs of ICMP errors that came in
    # ICMP errors received about this flow's packets: ErrorIn -> count
    errors_in: Counter = field(default_factory=Counter)
    syn_fates: Counter = field(default_factory=Counter)
    # Segments seen again (same sequence number and flags): the sender retried.
    syn_retrans_in: int = 0  # SYNs the peer sent again
    syn_retrans_out: int = 0  # SYNs this host sent again
    synack_retrans_out: int = 0  # SYN-ACKs this host sent again
    retrans_out: int = 0  # other segments this host sent again
    retrans_in: int = 0
    retrans_out_lengths: Counter = field(default_factory=Counter)  # IP length -> count
    acks_in: int = 0  # segments from the peer with ACK and without SYN: the handshake completed
    # Connections this host accepted whose handshake completed (ESTABLISHED, or an
    # ACK from the peer where the state tracepoint is missing): set by finish().
    completed: int = 0
    rewrites: Counter = field(default_factory=Counter)  # Rewrite -> packets

    @property
    def label(self) -> str:
        lp = f":{self.local_port}" if self.local_port is not None else ""
        pp = f":{self.peer_port}" if self.peer_port is not None else ""
        return f"{self.proto.upper()} {self.peer}{pp} > {self.local}{lp}"

    members: list[int] = field(default_factory=list)  # merged flows' ids (merge_flows)
    # The last segments each way, (direction, seq, flags): not in JSON, not merged.
    _recent: OrderedDict = field(default_factory=OrderedDict, repr=False)
    # Reasons the diagnosis told from where the drops were freed (the kernel named
    # none): reason -> what that rests on. Set on merged flows only; not in JSON.
    _inferred: dict = field(default_factory=dict, repr=False)

    def seen_again(self, direction: str, ev: PacketEvent) -> bool:
        """Whether this TCP segment (by sequence number and flags) was seen before."""
        key = (direction, ev.seq, ev.tcp_flags, ev.length)
        if key in self._recent:
            return True
        self._recent[key] = True
        if len(self._recent) > 2 * RECENT_SEGMENTS:
            self._recent.popitem(last=False)
        return False

    def to_json(self) -> dict:
        out: dict[str, object] = {"kind": "flow"}
        for name, value in self.__dict__.items():
            if name.startswith("_"):
                continue
            if name in RECORD_COUNTERS:
                out[name] = [{**key._asdict(), "count": n} for key, n in value.items()]
            else:
                out[name] = dict(value) if isinstance(value, Counter) else value
        return out


class Correlator:
    def __init__(self, local_addrs: set[str] | frozenset[str] = frozenset(),
                 ports: tuple[int, ...] = ()):
        self.local_addrs = set(local_addrs)
        self.ports = set(ports)
        self.packets: OrderedDict[tuple, PacketRecord] = OrderedDict()
        # Open requests (SYNs, echo requests) by (proto, src, dst), oldest first, so
        # that an answer finds its request without scanning every open packet.
        self.requests: dict[tuple, deque[PacketRecord]] = {}
        self.flows: dict[tuple, Flow] = {}
        # The packet each skb address last carried, for events the kernel kept by
        # their skb after a rewrite (tracked): they belong to the original packet.
        # Newer notes first (_note_skb, _skb_record).
        self._skbs: dict[str, PacketRecord] = {}
        self._older_skbs: dict[str, PacketRecord] = {}
        self.evicted_packets = 0
        self.evicted_flows = 0
        # Where the kernel has no icmp:icmp_send tracepoint (before 5.14ish; 5.10),
        # the ICMP errors this host sends are counted as they leave, at tc egress,
        # on the flow of the packet they quote. Set by the caller, who knows the
        # kernel (the watch) or its recorded start line (explain).
        self.errors_from_egress = False
        # Each shape's Route (_route).
        self._routes: dict[Shape | None, Route] = {}
        # Each hook's handler (_on_<hook>), found once rather than per event.
        self._handlers = {name[4:].replace("_", "-"): getattr(self, name)
                          for name in dir(self) if name.startswith("_on_")
                          and name not in ("_on_tracked", "_on_state")}

    # -------------------------------------------------------------- orientation

    def _direction(self, ev: PacketEvent) -> str:
        if ev.dst in self.local_addrs:
            return "in"
        if ev.src in self.local_addrs:
            return "out"
        if ev.hook in ARRIVAL_HOOKS:
            return "in" if not self.local_addrs else "through"
        if ev.hook == "tc-egress":
            return "out" if not self.local_addrs else "through"
        return "in"

    def _flow_key(self, ev: PacketEvent, direction: str) -> tuple:
        """(proto, local, local_port, peer, peer_port) of the event's flow."""
        sport, dport = ev.sport, ev.dport
        if ev.proto.startswith("icmp"):
            sport = dport = None  # one ICMP flow per pair of hosts
        if direction == "out" or (direction == "through" and sport in self.ports):
            return ev.proto, ev.src, sport, ev.dst, dport
        return ev.proto, ev.dst, dport, ev.src, sport

    def flow_for(self, ev: PacketEvent, direction: str) -> Flow:
        return self._flow(self._flow_key(ev, direction), ev.ts)

    def _flow(self, key: tuple, ts: float) -> Flow:
        flow = self.flows.get(key)
        if flow is None:
            if len(self.flows) >= MAX_FLOWS:
                self.evicted_flows += 1
                self.flows.pop(next(iter(self.flows)))
            proto, local, lport, peer, pport = key
            flow = Flow(len(self.flows) + self.evicted_flows + 1, proto, local, lport,
                        peer, pport, first_ts=ts)
            self.flows[key] = flow
        if ts > flow.last_ts:
            flow.last_ts = ts
        return flow

    def _route(self, ev: PacketEvent, shape: Shape | None) -> Route:
        """The event's Route: remembered for its shape (an event without one, an
        ICMP error, gets its own)."""
        route = Route(self, ev)
        if shape is not None:
            if len(self._routes) >= MAX_ROUTES:
                self._routes.clear()
            self._routes[shape] = route
        return route

    # -------------------------------------------------------------- packets

    def _new_record(self, key: tuple, ev: PacketEvent, route: Route) -> PacketRecord:
        direction = route.direction
        if route.hook == "rst-sent" and ev.skb is None:
            direction = "out"  # a socket's own abort: the RST itself
        packets = self.packets
        if len(packets) >= MAX_OPEN_PACKETS:
            oldest = self._pop_oldest()
            if oldest.fate is None:
                self._retire(oldest)
        rec = packets[key] = PacketRecord(key, ev, direction, route.request, route.syn)
        if route.request:
            self.requests.setdefault((ev.proto, ev.src, ev.dst), deque()).append(rec)
        return rec

    def _pop_oldest(self) -> PacketRecord:
        rec = self.packets.popitem(last=False)[1]
        if rec.request:
            first = rec.first
            bucket = self.requests.get((first.proto, first.src, first.dst))
            if bucket and bucket[0] is rec:  # the oldest packet is the oldest of its bucket
                bucket.popleft()
                if not bucket:
                    del self.requests[(first.proto, first.src, first.dst)]
        return rec

    def feed(self, ev: PacketEvent, shape: Shape | None = None) -> bool:
        """Account for one event (with its shape where the decoder names one: what
        follows from it is worked out once, its Route). Returns whether this was
        the packet's first sighting (the human output prints arrivals once)."""
        return self.feed_batch(((ev, shape),))[0]

    def feed_batch(self, batch: Iterable[Decoded]) -> list[bool]:
        """feed() for each (event, shape) of a batch, in order (one drain of the ring
        buffer, decoded); the first sightings, in the same order. The busiest code of
        a watch: one loop for the batch, what stays put for it looked up once."""
        routes, packets, flows = self._routes, self.packets, self.flows
        firsts: list[bool] = []
        noted = firsts.append
        for ev, shape in batch:
            route = routes.get(shape)  # never None's: those are not remembered
            if route is None:
                route = self._route(ev, shape)
            if route.special and self._feed_special(ev):
                noted(False)
                continue
            key = (route.prefix, ev.ip_id, ev.seq)  # packet_key(ev)
            rec = packets.get(key)
            first = rec is None
            if rec is None:
                rec = self._new_record(key, ev, route)
            rec.hooks.append(route.hook)
            skb = ev.skb
            if skb and self._skbs.get(skb) is not rec:
                self._note_skb(skb, rec)
            flow_key = route.flow_key if rec.direction == route.direction else \
                self._flow_key(ev, rec.direction)  # seen first going another way
            flow = flows.get(flow_key)
            ts = ev.ts
            if flow is None:
                flow = self._flow(flow_key, ts)
            elif ts > flow.last_ts:
                flow.last_ts = ts
            if first:
                self._count_new(flow, rec, ev, route)
            if route.tcp:  # only TCP segments are sent again
                self._count_retry(flow, rec, ev)
            route.handler(rec, flow, ev, route)
            noted(first)
        return firsts

    def _note_skb(self, skb: str, rec: PacketRecord) -> None:
        """The packet an skb address carries now. Two generations of notes, the
        newer filled until it holds MAX_OPEN_PACKETS, then made the older: bounded,
        and a note costs one store, where evicting the single oldest cost three
        dictionary operations per packet."""
        skbs = self._skbs
        skbs[skb] = rec
        if len(skbs) >= MAX_OPEN_PACKETS:
            self._older_skbs, self._skbs = skbs, {}

    def _skb_record(self, skb: str) -> PacketRecord | None:
        """The packet an skb address last carried, if still noted."""
        rec = self._skbs.get(skb)
        return rec if rec is not None else self._older_skbs.get(skb)

    def _feed_special(self, ev: PacketEvent) -> bool:
        """feed() for a state change, or a packet followed by its skb after a rewrite
        (NAT) whose original is known: True when done, False for one to take the
        common path."""
        if ev.hook == "tcp-state":
            self._on_state(ev)
            return True
        skb = ev.skb
        if ev.tracked and skb:
            original = self._skb_record(skb)
            if original is not None and packet_key(ev) not in self.packets:
                self._on_tracked(original, ev)
                return True
        return False

    def _on_tracked(self, rec: PacketRecord, ev: PacketEvent) -> None:
        """A packet seen again after NAT rewrote it: its fate is the original's."""
        rec.hooks.append(ev.hook)
        flow = self.flow_for(rec.first, rec.direction)
        if not rec.rewritten:
            rec.rewritten = True
            first = rec.first
            if (ev.dst, ev.dport) != (first.dst, first.dport):
                flow.rewrites[Rewrite("dnat", ev.dst, ev.dport)] += 1
            if (ev.src, ev.sport) != (first.src, first.sport):
                flow.rewrites[Rewrite("snat", ev.src, ev.sport)] += 1
        if ev.hook == "tc-egress" and rec.direction == "in":
            if rec.fate != "forwarded":  # on to where the rewrite sent it
                flow.forwarded += 1
                self._settle(rec, flow, "forwarded")
            return
        handler = self._handlers.get(ev.hook)
        if handler and ev.hook not in ARRIVAL_HOOKS:  # another namespace's arrival
            handler(rec, flow, ev, Route(self, ev))

    def _count_retry(self, flow: Flow, rec: PacketRecord, ev: PacketEvent) -> None:
        if ev.proto != "tcp" or rec.direction == "through":
            return
        if ev.hook != ("tc-egress" if rec.direction == "out" else rec.hooks[0]) or \
                ev.hook not in ("xdp", "tc-ingress", "tc-egress"):
            return  # count each sending once: where the packet was first seen
        flags = ev.tcp_flags or ""
        if not (ev.length > 52 or "S" in flags or "F" in flags):
            return  # a bare ACK: the same one again is normal (duplicate ACKs)
        if not flow.seen_again(rec.direction, ev):
            return
        out = rec.direction == "out"
        if flags == "S":
            if out:
                flow.syn_retrans_out += 1
            else:
                flow.syn_retrans_in += 1
        elif "S" in flags and out:
            flow.synack_retrans_out += 1
        elif out:
            flow.retrans_out += 1
            flow.retrans_out_lengths[ev.length] += 1
        else:
            flow.retrans_in += 1

    def _count_new(self, flow: Flow, rec: PacketRecord, ev: PacketEvent, route: Route) -> None:
        """A packet's first sighting."""
        flags, echo = route.flags, route.echo
        if rec.direction == "out":
            if ev.quoted and self.errors_from_egress and ev.hook == "tc-egress":
                self._error_sent(ev)
            flow.packets_out += 1
            if flags:
                flow.syn_out += flags == "S"
                flow.synack_out += "S" in flags and "A" in flags
                flow.rst_out += "R" in flags
            elif echo is not None:
                flow.echo_replies_out += echo == ECHO_REPLY[ev.proto]
                flow.echo_requests_out += echo == ECHO_REQUEST[ev.proto]
            return
        flow.packets_in += 1
        flow.peer_ttls[ev.ttl] += 1
        if flags:
            flow.syn_in += flags == "S"
            flow.synack_in += "S" in flags and "A" in flags
            if "R" in flags:
                flow.rst_in += 1
                flow.reset_ttls[ev.ttl] += 1
            flow.acks_in += "A" in flags and "S" not in flags and "R" not in flags
        elif echo is not None:
            flow.echo_requests_in += echo == ECHO_REQUEST[ev.proto]
            flow.echo_replies_in += echo == ECHO_REPLY[ev.proto]
        if ev.quoted:
            flow.error_ttls[ev.ttl] += 1
            self._error_about(ev)

    def _error_about(self, ev: PacketEvent) -> None:
        """Count an ICMP error on the flow of the packet it quotes, when that flow
        is known: a router's 'unreachable' about our SYNs to 10.0.2.2 belongs to
        the flow to 10.0.2.2, not to the router."""
        flow = self._quoted_flow(ev, sent_by_us=True)
        if flow is not None:
            flow.errors_in[ErrorIn(ev.icmp_type or 0, ev.icmp_code or 0, ev.src, ev.ttl)] += 1

    def _quoted_flow(self, ev: PacketEvent, sent_by_us: bool) -> Flow | None:
        """The known flow of the packet an ICMP error quotes: one this host sent (its
        source is the flow's local end) or one it received (its destination is)."""
        q = ev.quoted or {}
        ported = q.get("proto") in ("tcp", "udp")
        ends = [(q.get("src"), q.get("sport") if ported else None),
                (q.get("dst"), q.get("dport") if ported else None)]
        (local, lport), (peer, pport) = ends if sent_by_us else ends[::-1]
        return self.flows.get((q.get("proto"), local, lport, peer, pport))

    def _error_sent(self, ev: PacketEvent) -> None:
        """An ICMP error this host sends, seen leaving: counted on the flow of the
        packet it quotes, which came in (its destination is this flow's local end)."""
        flow = self._quoted_flow(ev, sent_by_us=False)
        if flow is not None:
            flow.icmp_errors_sent[IcmpCode(ev.icmp_type or 0, ev.icmp_code or 0)] += 1

    # Each hook's handler: _on_<hook>(rec, flow, ev, route), route the event's Route.

    def _no_handler(self, rec: PacketRecord, flow: Flow, ev: PacketEvent, route: Route) -> None:
        """A hook this version does not know (a newer kernel side): seen, no more."""

    def _on_xdp(self, rec: PacketRecord, flow: Flow, ev: PacketEvent, route: Route) -> None:
        self._arrived(rec, flow, ev, route)

    def _on_tc_ingress(self, rec: PacketRecord, flow: Flow, ev: PacketEvent,
                       route: Route) -> None:
        if "xdp" not in rec.hooks:  # (the last of them is this tc-ingress)
            self._arrived(rec, flow, ev, route)

    def _arrived(self, rec: PacketRecord, flow: Flow, ev: PacketEvent, route: Route) -> None:
        flow.arrived_on[route.arrival] += 1
        checksum = ev.checksum
        if checksum:
            flow.checksums[checksum] += 1
        if route.answers and rec.direction == "in":
            self._answer(ev)  # an answer to what this host sent (a client's SYN)

    def _on_tc_egress(self, rec: PacketRecord, flow: Flow, ev: PacketEvent,
                      _route: Route) -> None:
        if rec.direction == "through" and any(h in ARRIVAL_HOOKS for h in rec.hooks):
            if rec.fate != "forwarded":
                flow.forwarded += 1
                self._settle(rec, flow, "forwarded")
            return
        if rec.direction != "out":
            return
        self._settle(rec, flow, "sent")
        self._answer(ev)

    def _answer(self, ev: PacketEvent) -> None:
        """An outgoing packet may settle the fate of the incoming one it answers."""
        flags = ev.tcp_flags or ""
        if ev.proto == "tcp" and "S" in flags and "A" in flags:
            want_seq = (ev.ack - 1) & 0xFFFFFFFF if ev.ack is not None else None
            self._settle_request(ev, lambda r: r.tcp_flags == "S" and r.seq == want_seq,
                                 "answered")
        elif ev.proto == "tcp" and "R" in flags:
            # Going out, a RST that TCP did not send (no rst-sent event settled the
            # SYN) comes from netfilter's REJECT, which sends it before dropping the
            # SYN. Coming in, it refuses this host's own SYN.
            fate = "rejected" if ev.hook == "tc-egress" else "reset"
            self._settle_request(ev, lambda r: r.tcp_flags == "S", fate, open_only=True)
        elif ev.icmp_type == ECHO_REPLY.get(ev.proto):
            request = ECHO_REQUEST.get(ev.proto)
            self._settle_request(
                ev, lambda r: r.icmp_type == request and (r.sport, r.dport) ==
                (ev.sport, ev.dport), "answered", same_ports=False)

    def _settle_request(self, ev: PacketEvent, matches, fate: str,
                        open_only: bool = False, same_ports: bool = True) -> None:
        """Settle the newest incoming packet, from the peer ev goes to, that ev answers."""
        for rec in reversed(self.requests.get((ev.proto, ev.dst, ev.src), ())):
            first = rec.first
            if same_ports and (first.sport, first.dport) != (ev.dport, ev.sport):
                continue
            if not matches(first) or rec.fate in ("answered", "rejected", "reset"):
                continue
            if open_only and rec.fate not in (None, "dropped", "sent"):
                continue
            self._settle(rec, self.flow_for(first, rec.direction), fate)
            return

    def _settle(self, rec: PacketRecord, flow: Flow, fate: str, reason: str | None = None,
                location: str | None = None) -> None:
        """Set the packet's fate unless a stronger one is already known (then only
        fill in the reason and location where none is known); where it changed,
        move the packet from its old fate to the new one in the flow's counts."""
        old = rec.fate
        if old and FATE_RANK[old] > FATE_RANK[fate]:
            if rec.reason is None:
                rec.reason = reason
            if rec.location is None:
                rec.location = location
            return
        rec.fate = fate
        if reason is not None or location is not None:
            rec.reason, rec.location = reason, location
        if old:
            _decrement(flow.fates, old)
            if rec.syn:
                _decrement(flow.syn_fates, old)
        flow.fates[fate] += 1
        if rec.syn:
            flow.syn_fates[fate] += 1

    def _on_drop(self, rec: PacketRecord, flow: Flow, ev: PacketEvent, route: Route) -> None:
        site = route.site
        func = site.function
        flow.drops[site.reason] += 1
        flow.drop_locations[func] += 1
        flow.drop_sites[site] += 1
        if ev.iface:
            flow.drop_ifaces[ev.iface] += 1
        if rec.syn and rec.fate in (None, "sent", "dropped"):
            flow.syn_drops[ev.reason or "UNKNOWN"] += 1
        if rec.fate == "rejected" and func in TCP_RECEIVE and ev.reason in (None, "NO_SOCKET"):
            # The RST that left before this drop was TCP's own answer to a segment for
            # no socket, not a firewall's REJECT (which frees it in nf_hook_slow):
            # kernels whose tcp_send_reset tracepoint stays silent then (5.10) get here.
            flow.kernel_resets += 1
            self._settle(rec, flow, "reset")
        self._settle(rec, flow, "dropped", ev.reason, ev.location)

    def _on_tcp_bad_csum(self, rec: PacketRecord, flow: Flow, _ev: PacketEvent,
                         _route: Route) -> None:
        rec.bad_csum = True
        flow.bad_csum += 1

    def _on_rst_sent(self, rec: PacketRecord, flow: Flow, _ev: PacketEvent,
                     _route: Route) -> None:
        flow.kernel_resets += 1
        if rec.direction == "in":
            self._settle(rec, flow, "reset")

    def _on_icmp_error_sent(self, rec: PacketRecord, flow: Flow, ev: PacketEvent,
                            _route: Route) -> None:
        code = IcmpCode(ev.icmp_type or 0, ev.icmp_code or 0)
        flow.icmp_errors_sent[code] += 1
        self._settle(rec, flow, "icmp-error")

    def _on_state(self, ev: PacketEvent) -> None:
        if ev.state and ev.state.endswith(">ESTABLISHED"):
            # The tracepoint names the socket's own ends: source is local.
            flow = self.flow_for(ev, "out")
            flow.established += 1

    # -------------------------------------------------------------- the end

    def _retire(self, rec: PacketRecord) -> None:
        """A packet leaves the table: give it a fate from what was seen."""
        if rec.fate is None:
            flow = self.flow_for(rec.first, rec.direction)
            if rec.direction == "in" and any(h in ARRIVAL_HOOKS for h in rec.hooks):
                self._settle(rec, flow, "unanswered" if rec.request else "delivered")
            elif rec.direction == "through":
                self._settle(rec, flow, "not-forwarded")
            else:
                self._settle(rec, flow, "sent")

    def finish(self) -> list[Flow]:
        """Settle every open packet and return the flows, busiest first."""
        while self.packets:
            self._retire(self._pop_oldest())
        for flow in self.flows.values():  # one connection per flow (per peer port)
            flow.completed = int(bool(flow.syn_in and (flow.established or flow.acks_in)))
        return sorted(self.flows.values(), key=lambda f: (-(f.packets_in + f.packets_out), f.id))



def merge_flows(flows: list[Flow], ports: tuple[int, ...] = ()) -> list[Flow]:
    """One flow per peer and service: every connection from 10.0.1.2 to :80
    together, whatever its source port. Counts add up; members keeps the ids."""
    groups: dict[tuple, Flow] = {}
    for flow in sorted(flows, key=lambda f: f.id):
        key: tuple[str, str, int | None, str, int | None]
        if flow.local_port in ports or not ports or flow.peer_port not in ports:
            key = (flow.proto, flow.local, flow.local_port, flow.peer, None)
        else:
            key = (flow.proto, flow.local, None, flow.peer, flow.peer_port)
        group = groups.get(key)
        if group is None:
            group = Flow(flow.id, flow.proto, flow.local, key[2], flow.peer, key[4],
                         first_ts=flow.first_ts)
            groups[key] = group
        group.members.append(flow.id)
        for name, value in flow.__dict__.items():
            if name.startswith("_"):
                continue
            if isinstance(value, Counter):
                getattr(group, name).update(value)
            elif isinstance(value, int) and name not in ("id", "local_port", "peer_port"):
                setattr(group, name, getattr(group, name) + value)
        group.first_ts = min(group.first_ts, flow.first_ts)
        group.last_ts = max(group.last_ts, flow.last_ts)
    return list(groups.values())


def _decrement(counter: Counter, key: str) -> None:
    """One fewer; a fate no packet has any more is not listed (a SYN forwarded to a
    container and reset there was reset, not also 'forwarded: 0')."""
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]
