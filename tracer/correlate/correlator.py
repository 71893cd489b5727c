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
from typing import Callable, NamedTuple, Optional

from ..decode.events import Decoded, PacketEvent, Quoted, Shape
from ..model.kinds import (
    ARRIVAL_HOOKS,
    FATE_RANK,
    FINAL_ANSWERS,
    INTERFACE_HOOKS,
    CsumVerdict,
    Direction,
    Fate,
    Hook,
    Location,
    NatKind,
)
from ..model.protocols import ICMP_FAMILIES, IcmpCode, Proto, TcpFlags, TcpState

MAX_OPEN_PACKETS = 8192  # packets still waiting for a fate; the oldest give way
MAX_FLOWS = 16384  # about 4 KB each: a bounded ~64 MB, the oldest give way
MAX_ROUTES = 4096  # shapes remembered (_route): as many as the decoder keeps
RECENT_SEGMENTS = 32  # per flow and direction: enough to see a segment sent again

# The members the per-event code compares with, bound as module globals: an enum
# member read as its class's attribute costs 49 ns here, a global 16, and the
# correlator reads several per event.
_IN = Direction.IN
_OUT = Direction.OUT
_THROUGH = Direction.THROUGH
_ANSWERED = Fate.ANSWERED
_ANSWER_DROPPED = Fate.ANSWER_DROPPED
_DELIVERED = Fate.DELIVERED
_DROPPED = Fate.DROPPED
_FORWARDED = Fate.FORWARDED
_ICMP_ERROR = Fate.ICMP_ERROR
_NOT_FORWARDED = Fate.NOT_FORWARDED
_REJECTED = Fate.REJECTED
_RESET = Fate.RESET
_SENT = Fate.SENT
_UNANSWERED = Fate.UNANSWERED
_ICMP_SEND = Hook.ICMP_SEND
_SOCK_STATE = Hook.SOCK_STATE
_TCP_SEND_RESET = Hook.TCP_SEND_RESET
_TC_EGRESS = Hook.TC_EGRESS
_XDP = Hook.XDP

TCP_RECEIVE = frozenset({"tcp_v4_rcv", "tcp_v6_rcv"})  # where TCP frees what no socket wants
UNKNOWN_REASON = "UNKNOWN"  # a drop whose kernel named no reason (before 5.17)
NO_SOCKET = "NO_SOCKET"  # the kernel's reason for a segment no socket wants
# A packet's fates a later answer or drop may still settle.
OPEN_FATES = frozenset({None, _DROPPED, _SENT})
# A request's fates a refusal coming back may still settle: forwarded too (the far
# end it was forwarded or translated to resets it).
REFUSABLE = OPEN_FATES | {_FORWARDED}
# A bare ACK's IP length at most (header, TCP header, timestamps): the same one
# again is a duplicate ACK, not a retransmission. By IP version.
BARE_ACK_LENGTH = {4: 20 + 32, 6: 40 + 32}


class Arrival(NamedTuple):
    """Where a packet was first seen coming in."""

    hook: Hook
    iface: str | None


class DropSite(NamedTuple):
    reason: str
    function: str  # the kernel function that freed the packet, without offset


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
    their skb: DNAT (destination now addr:port) or SNAT (source now addr:port)."""

    kind: NatKind
    addr: str
    port: int | None


PacketKey = tuple[str, Optional[int], Optional[int]]
# (proto, local, local_port, peer, peer_port)
FlowKey = tuple[Proto, str, Optional[int], str, Optional[int]]


def packet_key(ev: PacketEvent) -> PacketKey:
    """(what the packet's shape fixes, IPv4 id or else the acknowledgment number,
    sequence): the first part is the same for every event of a shape, so that a
    Route keeps it (Route.prefix). IPv6 has no id: a receiver's ACKs, which all
    carry the same sequence number, differ by what they acknowledge."""
    return (_key_prefix(ev), ev.ip_id if ev.ip_id is not None else ev.ack, ev.seq)


def _key_prefix(ev: PacketEvent) -> str:
    """Protocol, addresses, ports, TCP flags and ICMP type, as one interned string:
    a string keeps its hash and an interned one compares by identity, where a tuple
    of them is hashed anew in every lookup of a packet (half the lookup's cost)."""
    icmp_type = ev.icmp_type if ev.hook is not _ICMP_SEND else None
    return sys.intern(f"{ev.proto} {ev.src} {ev.dst} {ev.sport} {ev.dport} {ev.tcp_flags} "
                      f"{icmp_type}")


class Route:
    """What the correlator makes of every event of one shape (decode.events.Shape),
    worked out once: its direction, flow, handler, the part of the packet key the
    shape fixes, and the named tuples its handlers count by."""

    __slots__ = ("hook", "direction", "flow_key", "handler", "prefix", "tcp", "special",
                 "arrival", "site", "answers", "request", "syn", "flags", "echo", "synack",
                 "rst", "ack_only", "opens_or_ends", "bare_ack", "echo_request", "echo_reply",
                 "on_interface", "v4")

    def __init__(self, correlator: Correlator, ev: PacketEvent):
        self.hook = ev.hook
        self.direction = correlator._direction(ev)
        self.flow_key = correlator._flow_key(ev, self.direction)
        self.handler = correlator._handlers.get(ev.hook, correlator._no_handler)
        self.prefix = _key_prefix(ev)
        self.tcp = ev.proto is Proto.TCP
        # Events feed() does not take by the common path: state changes (no packet)
        # and packets the kernel followed by their skb after a rewrite.
        self.special = ev.hook is _SOCK_STATE or ev.tracked
        self.on_interface = ev.hook in INTERFACE_HOOKS
        self.v4 = ev.ip_id is not None  # the packet key takes the IPv4 id
        self.arrival = Arrival(ev.hook, ev.iface)
        self.site = DropSite(ev.reason or UNKNOWN_REASON,
                             ev.location.function if ev.location else "?")
        # An arrival that may answer what this host sent (a client's SYN, a ping).
        self.answers = ev.tcp_flags is not None or ev.is_icmp
        # What the TCP flags say, worked out once: flag arithmetic on an IntFlag
        # costs a call per packet.
        flags = self.flags = ev.tcp_flags
        bits = int(flags) if flags is not None else 0
        self.syn = flags is not None and bits == TcpFlags.SYN
        self.synack = bool(bits & TcpFlags.SYN) and bool(bits & TcpFlags.ACK)
        self.rst = bool(bits & TcpFlags.RST)
        self.ack_only = bool(bits & TcpFlags.ACK) and not bits & (TcpFlags.SYN | TcpFlags.RST)
        self.opens_or_ends = bool(bits & (TcpFlags.SYN | TcpFlags.FIN))
        self.bare_ack = BARE_ACK_LENGTH.get(ev.family, 52)
        # ICMP's own type, for echo requests and replies.
        family = ICMP_FAMILIES.get(ev.proto)
        self.echo = ev.icmp_type if family is not None else None
        self.echo_request = family is not None and ev.icmp_type == family.echo_request
        self.echo_reply = family is not None and ev.icmp_type == family.echo_reply
        # A packet that asks for an answer (a SYN, an echo request): its record is
        # noted where the answer will look for it (Correlator.requests), and one
        # that none came to was "unanswered".
        self.request = self.syn or self.echo_request


# PacketRecord.marks
REWRITTEN = 1  # its rewrites are counted on its flow already
FORWARDED = 2  # this host sent it on (routed, or translated onward)


class PacketRecord:
    """One packet followed across hooks: where it was seen and its fate so far.
    A plain class with slots: one is made per packet, the busiest allocation of
    the correlator."""

    __slots__ = ("key", "first", "direction", "request", "syn", "hooks", "fate",
                 "reason", "location", "marks", "answers")

    def __init__(self, key: PacketKey, first: PacketEvent, direction: Direction,
                 request: bool = False, syn: bool = False):
        self.key = key
        self.first = first
        self.direction = direction
        self.request = request  # it asks for an answer: a SYN, an echo request
        self.syn = syn  # it is a SYN
        self.hooks: list[Hook] = []
        self.fate: Fate | None = None
        self.reason: str | None = None
        self.location: Location | None = None
        self.marks = 0  # REWRITTEN, FORWARDED: one field, one store per packet
        self.answers: PacketRecord | None = None  # the request this packet answered


@dataclass
class Flow:
    """Counts for one conversation between this host and a peer."""

    id: int
    proto: Proto
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
    fates: Counter[Fate] = field(default_factory=Counter)
    drops: Counter[str] = field(default_factory=Counter)  # reason -> count
    # function -> count: drop_sites by function, made by finish() (not per drop)
    drop_locations: Counter[str] = field(default_factory=Counter)
    drop_sites: Counter[DropSite] = field(default_factory=Counter)
    drop_ifaces: Counter[str] = field(default_factory=Counter)  # interface of dropped packets
    # reason -> packets this host sent (its answers) that it dropped itself, on the
    # way out: they are in `drops` too
    drops_out: Counter[str] = field(default_factory=Counter)
    syn_drops: Counter[str] = field(default_factory=Counter)  # reason -> SYNs dropped for it
    icmp_errors_sent: Counter[IcmpCode] = field(default_factory=Counter)
    arrived_on: Counter[Arrival] = field(default_factory=Counter)
    checksums: Counter[CsumVerdict] = field(default_factory=Counter)  # verdicts at arrival
    peer_ttls: Counter[int] = field(default_factory=Counter)
    reset_ttls: Counter[int] = field(default_factory=Counter)  # TTLs of the RSTs that came in
    error_ttls: Counter[int] = field(default_factory=Counter)  # of ICMP errors that came in
    # ICMP errors received about this flow's packets
    errors_in: Counter[ErrorIn] = field(default_factory=Counter)
    syn_fates: Counter[Fate] = field(default_factory=Counter)
    # Segments seen again (same sequence number and flags): the sender retried.
    syn_retrans_in: int = 0  # SYNs the peer sent again
    syn_retrans_out: int = 0  # SYNs this host sent again
    synack_retrans_out: int = 0  # SYN-ACKs this host sent again
    retrans_out: int = 0  # other segments this host sent again
    retrans_in: int = 0
    retrans_out_lengths: Counter[int] = field(default_factory=Counter)  # IP length -> count
    acks_in: int = 0  # segments from the peer with ACK and without SYN: the handshake completed
    # Connections this host accepted whose handshake completed (ESTABLISHED, or an
    # ACK from the peer where the state tracepoint is missing): set by finish().
    completed: int = 0
    rewrites: Counter[Rewrite] = field(default_factory=Counter)  # Rewrite -> packets
    members: list[int] = field(default_factory=list)  # merged flows' ids (merge_flows)
    # The last segments each way, (direction, seq, flags): not in JSON, not merged.
    _recent: OrderedDict[tuple[object, ...], bool] = field(default_factory=OrderedDict,
                                                           repr=False)
    # Reasons the diagnosis told from where the drops were freed (the kernel named
    # none): reason -> what that rests on. Set on merged flows only; not in JSON.
    _inferred: dict[str, str] = field(default_factory=dict, repr=False)

    def seen_again(self, direction: Direction, ev: PacketEvent) -> bool:
        """Whether this TCP segment (by sequence number and flags) was seen before."""
        key = (direction, ev.seq, ev.tcp_flags, ev.length)
        if key in self._recent:
            return True
        self._recent[key] = True
        if len(self._recent) > 2 * RECENT_SEGMENTS:
            self._recent.popitem(last=False)
        return False


Handler = Callable[["PacketRecord", "Flow", PacketEvent, "Route"], None]


class Correlator:
    def __init__(self, local_addrs: set[str] | frozenset[str] = frozenset(),
                 ports: tuple[int, ...] = ()):
        self.local_addrs = set(local_addrs)
        self.ports = set(ports)
        self.packets: OrderedDict[PacketKey, PacketRecord] = OrderedDict()
        # Open requests (SYNs, echo requests) by (proto, src, dst), oldest first, so
        # that an answer finds its request without scanning every open packet.
        self.requests: dict[tuple[Proto, str, str], deque[PacketRecord]] = {}
        self.flows: dict[FlowKey, Flow] = {}
        # The packet each skb address last carried, for events the kernel kept by
        # their skb after a rewrite (tracked): they belong to the original packet.
        # Newer notes first (_note_skb, _skb_record).
        self._skbs: dict[int, PacketRecord] = {}
        self._older_skbs: dict[int, PacketRecord] = {}
        self.evicted_packets = 0
        self.evicted_flows = 0
        # Where the kernel has no icmp:icmp_send tracepoint (before 5.14ish; 5.10),
        # the ICMP errors this host sends are counted as they leave, at tc egress,
        # on the flow of the packet they quote. Set by the caller, who knows the
        # kernel (the watch) or its recorded start line (explain).
        self.errors_from_egress = False
        # Each shape's Route (_route).
        self._routes: dict[Shape | None, Route] = {}
        # Each hook's handler, by the hook: every hook of a packet has one (a test
        # holds the table complete); state changes carry no packet (_on_state).
        self._handlers: dict[Hook, Handler] = {
            Hook.XDP: self._on_xdp,
            Hook.TC_INGRESS: self._on_tc_ingress,
            Hook.TC_EGRESS: self._on_tc_egress,
            Hook.KFREE_SKB: self._on_drop,
            Hook.TCP_BAD_CSUM: self._on_tcp_bad_csum,
            Hook.TCP_SEND_RESET: self._on_rst_sent,
            Hook.ICMP_SEND: self._on_icmp_error_sent,
        }

    # -------------------------------------------------------------- orientation

    def _direction(self, ev: PacketEvent) -> Direction:
        if ev.dst in self.local_addrs:
            return _IN
        if ev.src in self.local_addrs:
            return _OUT
        if ev.hook in ARRIVAL_HOOKS:
            return _IN if not self.local_addrs else _THROUGH
        if ev.hook is _TC_EGRESS:
            return _OUT if not self.local_addrs else _THROUGH
        return _IN

    def _flow_key(self, ev: PacketEvent, direction: Direction) -> FlowKey:
        """(proto, local, local_port, peer, peer_port) of the event's flow."""
        sport, dport = ev.sport, ev.dport
        if ev.proto.is_icmp:
            sport = dport = None  # one ICMP flow per pair of hosts
        if direction is _OUT or (direction is _THROUGH and
                                          sport in self.ports):
            return ev.proto, ev.src, sport, ev.dst, dport
        return ev.proto, ev.dst, dport, ev.src, sport

    def flow_key_of(self, ev: PacketEvent) -> FlowKey:
        """The key of the flow an event counts in (`flows`), as feed() decides it."""
        return self._flow_key(ev, self._direction(ev))

    def flow_for(self, ev: PacketEvent, direction: Direction) -> Flow:
        return self._flow(self._flow_key(ev, direction), ev.ts)

    def _flow(self, key: FlowKey, ts: float) -> Flow:
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

    def _new_record(self, key: PacketKey, ev: PacketEvent, route: Route) -> PacketRecord:
        direction = route.direction
        if route.hook is _TCP_SEND_RESET and ev.skb is None:
            direction = _OUT  # a socket's own abort: the RST itself
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
            # packet_key(ev): IPv6 has no id, the acknowledgment number stands in
            key = (route.prefix, ev.ip_id, ev.seq) if route.v4 else \
                (route.prefix, ev.ack, ev.seq)
            rec = packets.get(key)
            if rec is not None and route.on_interface and route.hook is rec.first.hook and \
                    ev.iface == rec.first.iface:
                # One packet passes an interface's hook once: seen again where it was
                # first seen, it is the same one sent again (an IPv6 retransmission
                # has no id to tell it by).
                self._supersede(rec)
                rec = None
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
                self._count_retry(flow, rec, ev, route)
            route.handler(rec, flow, ev, route)
            noted(first)
        return firsts

    def _supersede(self, rec: PacketRecord) -> None:
        """A packet whose key a later one takes: it leaves the tables with the fate
        seen so far (a request sent again got no answer in time)."""
        del self.packets[rec.key]
        if rec.request:
            first = rec.first
            bucket = self.requests.get((first.proto, first.src, first.dst))
            if bucket is not None and rec in bucket:
                bucket.remove(rec)
        self._retire(rec)

    def _note_skb(self, skb: int, rec: PacketRecord) -> None:
        """The packet an skb address carries now. Two generations of notes, the
        newer filled until it holds MAX_OPEN_PACKETS, then made the older: bounded,
        and a note costs one store, where evicting the single oldest cost three
        dictionary operations per packet."""
        skbs = self._skbs
        skbs[skb] = rec
        if len(skbs) >= MAX_OPEN_PACKETS:
            self._older_skbs, self._skbs = skbs, {}

    def _skb_record(self, skb: int) -> PacketRecord | None:
        """The packet an skb address last carried, if still noted."""
        rec = self._skbs.get(skb)
        return rec if rec is not None else self._older_skbs.get(skb)

    def _feed_special(self, ev: PacketEvent) -> bool:
        """feed() for a state change, or a packet followed by its skb after a rewrite
        (NAT) whose original is known: True when done, False for one to take the
        common path."""
        if ev.hook is _SOCK_STATE:
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
        if not rec.marks & REWRITTEN:
            rec.marks |= REWRITTEN
            first = rec.first
            if (ev.dst, ev.dport) != (first.dst, first.dport):
                flow.rewrites[Rewrite(NatKind.DNAT, ev.dst, ev.dport)] += 1
            if (ev.src, ev.sport) != (first.src, first.sport):
                flow.rewrites[Rewrite(NatKind.SNAT, ev.src, ev.sport)] += 1
        if ev.hook is _TC_EGRESS and rec.direction is _IN:
            if rec.fate is not _FORWARDED:  # on to where the rewrite sent it
                flow.forwarded += 1
                rec.marks |= FORWARDED
                self._settle(rec, flow, _FORWARDED)
            return
        handler = self._handlers.get(ev.hook)
        if handler is not None and ev.hook not in ARRIVAL_HOOKS:  # another namespace's
            handler(rec, flow, ev, Route(self, ev))

    def _count_retry(self, flow: Flow, rec: PacketRecord, ev: PacketEvent,
                     route: Route) -> None:
        direction = rec.direction
        if direction is _THROUGH:
            return
        if ev.hook is not (_TC_EGRESS if direction is _OUT else rec.hooks[0]) or \
                ev.hook not in INTERFACE_HOOKS:
            return  # count each sending once: where the packet was first seen
        if not (ev.length > route.bare_ack or route.opens_or_ends):
            return  # a bare ACK: the same one again is normal (duplicate ACKs)
        if not flow.seen_again(direction, ev):
            return
        out = direction is _OUT
        if route.syn:
            if out:
                flow.syn_retrans_out += 1
            else:
                flow.syn_retrans_in += 1
        elif route.synack and out:
            flow.synack_retrans_out += 1
        elif out:
            flow.retrans_out += 1
            flow.retrans_out_lengths[ev.length] += 1
        else:
            flow.retrans_in += 1

    def _count_new(self, flow: Flow, rec: PacketRecord, ev: PacketEvent, route: Route) -> None:
        """A packet's first sighting."""
        if rec.direction is _OUT:
            if ev.quoted and self.errors_from_egress and ev.hook is _TC_EGRESS:
                self._error_sent(ev)
            flow.packets_out += 1
            if route.flags is not None:
                flow.syn_out += route.syn
                flow.synack_out += route.synack
                flow.rst_out += route.rst
            elif route.echo is not None:
                flow.echo_replies_out += route.echo_reply
                flow.echo_requests_out += route.echo_request
            return
        flow.packets_in += 1
        flow.peer_ttls[ev.ttl] += 1
        if route.flags is not None:
            flow.syn_in += route.syn
            flow.synack_in += route.synack
            if route.rst:
                flow.rst_in += 1
                flow.reset_ttls[ev.ttl] += 1
            flow.acks_in += route.ack_only
        elif route.echo is not None:
            flow.echo_requests_in += route.echo_request
            flow.echo_replies_in += route.echo_reply
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
        q: Quoted | None = ev.quoted
        if q is None:
            return None
        ported = q.proto.has_ports
        ends = [(q.src, q.sport if ported else None), (q.dst, q.dport if ported else None)]
        (local, lport), (peer, pport) = ends if sent_by_us else ends[::-1]
        return self.flows.get((q.proto, local, lport, peer, pport))

    def _error_sent(self, ev: PacketEvent) -> None:
        """An ICMP error this host sends, seen leaving: counted on the flow of the
        packet it quotes, which came in (its destination is this flow's local end)."""
        flow = self._quoted_flow(ev, sent_by_us=False)
        if flow is not None:
            flow.icmp_errors_sent[IcmpCode(ev.icmp_type or 0, ev.icmp_code or 0)] += 1

    # Each hook's handler (Correlator._handlers): (rec, flow, ev, route), route the
    # event's Route.

    def _no_handler(self, rec: PacketRecord, flow: Flow, ev: PacketEvent, route: Route) -> None:
        """A hook this version does not know (a newer kernel side): seen, no more."""

    def _on_xdp(self, rec: PacketRecord, flow: Flow, ev: PacketEvent, route: Route) -> None:
        self._arrived(rec, flow, ev, route)

    def _on_tc_ingress(self, rec: PacketRecord, flow: Flow, ev: PacketEvent,
                       route: Route) -> None:
        if _XDP not in rec.hooks:  # (the last of them is this tc-ingress)
            self._arrived(rec, flow, ev, route)

    def _arrived(self, rec: PacketRecord, flow: Flow, ev: PacketEvent, route: Route) -> None:
        flow.arrived_on[route.arrival] += 1
        checksum = ev.checksum
        if checksum:
            flow.checksums[checksum] += 1
        if route.answers and rec.direction is _IN:
            self._answer(ev, route, rec)  # an answer to what this host sent (a client's SYN)

    def _on_tc_egress(self, rec: PacketRecord, flow: Flow, ev: PacketEvent,
                      route: Route) -> None:
        if rec.direction is _THROUGH and any(h in ARRIVAL_HOOKS for h in rec.hooks):
            if rec.fate is not _FORWARDED:
                flow.forwarded += 1
                rec.marks |= FORWARDED
                self._settle(rec, flow, _FORWARDED)
            self._answer(ev, route, rec)  # an answer passing back settles what it answers
            return
        if rec.direction is not _OUT:
            return
        self._settle(rec, flow, _SENT)
        self._answer(ev, route, rec)

    def _answer(self, ev: PacketEvent, route: Route, rec: PacketRecord) -> None:
        """An outgoing packet may settle the fate of the incoming one it answers."""
        if route.synack:
            want_seq = (ev.ack - 1) & 0xFFFFFFFF if ev.ack is not None else None
            rec.answers = self._settle_request(ev, lambda r: r.tcp_flags == TcpFlags.SYN and
                                               r.seq == want_seq, _ANSWERED)
        elif route.rst:
            # Going out, a RST that TCP did not send (no rst-sent event settled the
            # SYN) comes from netfilter's REJECT, which sends it before dropping the
            # SYN; unless the SYN was forwarded (or translated to a container): then
            # the far end reset it, and its RST comes back through here. Coming in,
            # it refuses this host's own SYN.
            fate = _REJECTED if ev.hook is _TC_EGRESS else _RESET
            self._settle_request(ev, lambda r: r.tcp_flags == TcpFlags.SYN, fate,
                                 open_only=True, if_forwarded=_RESET)
        elif route.echo_reply:
            family = ICMP_FAMILIES[ev.proto]
            rec.answers = self._settle_request(
                ev, lambda r: r.icmp_type == family.echo_request and (r.sport, r.dport) ==
                (ev.sport, ev.dport), _ANSWERED, same_ports=False)

    def _settle_request(self, ev: PacketEvent, matches: Callable[[PacketEvent], bool],
                        fate: Fate, open_only: bool = False, same_ports: bool = True,
                        if_forwarded: Fate | None = None) -> PacketRecord | None:
        """Settle the newest incoming packet, from the peer ev goes to, that ev answers
        (with `if_forwarded` instead of `fate` if this host had forwarded it); that
        packet's record, or None."""
        for rec in reversed(self.requests.get((ev.proto, ev.dst, ev.src), ())):
            first = rec.first
            if same_ports and (first.sport, first.dport) != (ev.dport, ev.sport):
                continue
            if not matches(first) or rec.fate in FINAL_ANSWERS:
                continue
            if open_only and rec.fate not in REFUSABLE:
                continue
            self._settle(rec, self.flow_for(first, rec.direction),
                         if_forwarded if rec.marks & FORWARDED and if_forwarded else fate)
            return rec
        return None

    def _settle(self, rec: PacketRecord, flow: Flow, fate: Fate, reason: str | None = None,
                location: Location | None = None) -> None:
        """Set the packet's fate unless a stronger one is already known (then only
        fill in the reason and location where none is known); where it changed,
        move the packet from its old fate to the new one in the flow's counts."""
        old = rec.fate
        if old is not None and FATE_RANK[old] > FATE_RANK[fate]:
            if rec.reason is None:
                rec.reason = reason
            if rec.location is None:
                rec.location = location
            return
        rec.fate = fate
        if reason is not None or location is not None:
            rec.reason, rec.location = reason, location
        if old is not None:
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
        flow.drop_sites[site] += 1
        if ev.iface:
            flow.drop_ifaces[ev.iface] += 1
        if rec.direction is _OUT:
            flow.drops_out[site.reason] += 1
            request = rec.answers
            if request is not None and request.fate is _ANSWERED:  # it never left
                self._settle(request, self.flow_for(request.first, request.direction),
                             _ANSWER_DROPPED)
        if rec.syn and rec.fate in OPEN_FATES:
            flow.syn_drops[site.reason] += 1
        if rec.fate is _REJECTED and func in TCP_RECEIVE and \
                ev.reason in (None, NO_SOCKET):
            # The RST that left before this drop was TCP's own answer to a segment for
            # no socket, not a firewall's REJECT (which frees it in nf_hook_slow):
            # kernels whose tcp_send_reset tracepoint stays silent then (5.10) get here.
            flow.kernel_resets += 1
            self._settle(rec, flow, _RESET)
        self._settle(rec, flow, _DROPPED, ev.reason, ev.location)

    def _on_tcp_bad_csum(self, _rec: PacketRecord, flow: Flow, _ev: PacketEvent,
                         _route: Route) -> None:
        flow.bad_csum += 1

    def _on_rst_sent(self, rec: PacketRecord, flow: Flow, _ev: PacketEvent,
                     _route: Route) -> None:
        flow.kernel_resets += 1
        if rec.direction is _IN:
            self._settle(rec, flow, _RESET)

    def _on_icmp_error_sent(self, rec: PacketRecord, flow: Flow, ev: PacketEvent,
                            _route: Route) -> None:
        code = IcmpCode(ev.icmp_type or 0, ev.icmp_code or 0)
        flow.icmp_errors_sent[code] += 1
        self._settle(rec, flow, _ICMP_ERROR)

    def _on_state(self, ev: PacketEvent) -> None:
        if ev.state is not None and ev.state.new is TcpState.ESTABLISHED:
            # The tracepoint names the socket's own ends: source is local.
            flow = self.flow_for(ev, _OUT)
            flow.established += 1

    # -------------------------------------------------------------- the end

    def _retire(self, rec: PacketRecord) -> None:
        """A packet leaves the table: give it a fate from what was seen."""
        if rec.fate is None:
            flow = self.flow_for(rec.first, rec.direction)
            if rec.direction is _IN and any(h in ARRIVAL_HOOKS for h in rec.hooks):
                self._settle(rec, flow, _UNANSWERED if rec.request else _DELIVERED)
            elif rec.direction is _THROUGH:
                self._settle(rec, flow, _NOT_FORWARDED)
            else:
                self._settle(rec, flow, _SENT)

    def finish(self) -> list[Flow]:
        """Settle every open packet and return the flows, busiest first."""
        while self.packets:
            self._retire(self._pop_oldest())
        for flow in self.flows.values():  # one connection per flow (per peer port)
            flow.completed = int(bool(flow.syn_in and (flow.established or flow.acks_in)))
            locations: Counter[str] = Counter()
            for site, n in flow.drop_sites.items():
                locations[site.function] += n
            flow.drop_locations = locations
        return sorted(self.flows.values(), key=lambda f: (-(f.packets_in + f.packets_out), f.id))



def merge_flows(flows: list[Flow], ports: tuple[int, ...] = ()) -> list[Flow]:
    """One flow per peer and service: every connection from 10.0.1.2 to :80
    together, whatever its source port. Counts add up; members keeps the ids."""
    groups: dict[FlowKey, Flow] = {}
    for flow in sorted(flows, key=lambda f: f.id):
        key: FlowKey
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
            elif isinstance(value, int) and name not in _NOT_COUNTS:
                setattr(group, name, getattr(group, name) + value)
        group.first_ts = min(group.first_ts, flow.first_ts)
        group.last_ts = max(group.last_ts, flow.last_ts)
    return list(groups.values())


# The int fields of a Flow that say which flow it is rather than count.
_NOT_COUNTS = frozenset({"id", "proto", "local_port", "peer_port"})


def _decrement(counter: Counter[Fate], key: Fate) -> None:
    """One fewer; a fate no packet has any more is not listed (a SYN forwarded to a
    container and reset there was reset, not also 'forwarded: 0')."""
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]
