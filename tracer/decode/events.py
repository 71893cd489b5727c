"""Turn the kernel's raw events (decode.raw) into typed, JSON-ready packet events."""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Optional

from ..model.kinds import (
    ARRIVAL_HOOKS,
    VERDICTS,
    CsumVerdict,
    Hook,
    Location,
    StateChange,
)
from ..model.protocols import ICMP_FAMILIES, Proto, TcpFlags, TcpState, is_icmp_error
from .raw import RING_FIELDS, RawAggKey, full_record

# Echo requests and replies of both families: their id and sequence ride in the ports.
_ECHO_TYPES = frozenset(t for family in ICMP_FAMILIES.values()
                        for t in (family.echo_request, family.echo_reply))
_REASON_HOOKS = frozenset({Hook.KFREE_SKB, Hook.TCP_SEND_RESET})
_new_event = tuple.__new__  # PacketEvent from its values, as _make does without the checks

# A record's shape: the span of the raw fields every event of one hook, flow,
# reason and place shares (bpf/event.h: netns to snap), which the ring reader hands
# over as one bytes string (decode/raw.py RING_STRUCT). The decoded event's fields
# other than the per-packet ones (PER_PACKET_FIELDS) follow from it. A flood
# repeats a handful of shapes, so the names, addresses and symbol of each are
# worked out once (Decoder.decode_batch).
MAX_SHAPES = 4096  # a scan of many ports or hosts: start again when full
# What changes from one packet of a shape to the next: the decoder fills these in
# per record; every other field is the shape's.
PER_PACKET_FIELDS = ("ts", "length", "ttl", "ip_id", "seq", "ack", "checksum", "csum_field",
                     "skb")
# The ring reader's record fields, by position (RING_STRUCT's tuple).
(_TS_NS, _SKB, _SEQ, _ACK, _PKT_LEN, _IP_ID, _L4_CSUM, _TTL, _CSUM_VERDICT, _SHARED) = (
    RING_FIELDS.index(name) for name in ("ts_ns", "skb", "seq", "ack_seq", "pkt_len", "ip_id",
                                         "l4_csum", "ttl", "csum_verdict", "shared"))


class Shape:
    """What every event of one shape shares: the values of its fields but the
    per-packet ones (`values`, in declaration order, the per-packet ones as the
    first event of the shape had them) and which per-packet ones it has. The
    decoder hands it over with each event of the shape, so that later stages can
    work out once per shape what follows from it: a Shape hashes by identity, and
    stays the same object as long as the decoder remembers the shape (MAX_SHAPES)."""

    __slots__ = ("values", "v4", "tcp", "snap_len", "checked")

    def __init__(self, values: list[object], v4: bool, tcp: bool, snap_len: int,
                 checked: bool):
        self.values = values
        self.v4, self.tcp = v4, tcp
        self.snap_len = snap_len  # bytes of the segment captured: 0 for none
        # Arrivals of TCP and UDP: the kernel judged each one's checksum.
        self.checked = checked


def _address(raw: bytes, family: int) -> str:
    """16 bytes as the C struct holds them (IPv4 in the first 4), as text."""
    if family == 4:
        return str(ipaddress.IPv4Address(raw[:4]))
    return str(ipaddress.IPv6Address(raw))


# ---------------------------------------------------------------- ICMP errors


class Quoted(NamedTuple):
    """The start of the packet an ICMP error answers, as the error quotes it:
    addresses, protocol, TTL left, ports (TCP/UDP: sequence too; ICMP echo: id and
    sequence in sport and dport)."""

    proto: Proto
    src: str
    dst: str
    ttl: int
    sport: Optional[int] = None
    dport: Optional[int] = None
    seq: Optional[int] = None


def quoted_packet(proto: Proto, icmp_type: int, snap: bytes) -> Quoted | None:
    """What an ICMP error quotes; None for other ICMP messages or a short quote."""
    if not is_icmp_error(proto, icmp_type):
        return None
    inner = snap[8:]
    if proto is Proto.ICMP and len(inner) >= 20 and inner[0] >> 4 == 4:
        ihl = (inner[0] & 0x0F) * 4
        number, ttl = inner[9], inner[8]
        src, dst = (str(ipaddress.IPv4Address(inner[i:i + 4])) for i in (12, 16))
    elif proto is Proto.ICMPV6 and len(inner) >= 40:
        ihl, number, ttl = 40, inner[6], inner[7]
        src, dst = (str(ipaddress.IPv6Address(inner[i:i + 16])) for i in (8, 24))
    else:
        return None
    quoted_proto = Proto(number)
    l4 = inner[ihl:ihl + 8]
    if len(l4) >= 4 and quoted_proto.has_ports:
        sport, dport = struct.unpack("!HH", l4[:4])
        seq = struct.unpack("!I", l4[4:8])[0] if quoted_proto is Proto.TCP and len(l4) == 8 \
            else None
        return Quoted(quoted_proto, src, dst, ttl, sport, dport, seq)
    if len(l4) == 8 and quoted_proto.is_icmp:
        echo_id, sequence = struct.unpack("!HH", l4[4:8])
        return Quoted(quoted_proto, src, dst, ttl, echo_id, sequence)
    return Quoted(quoted_proto, src, dst, ttl)


# ---------------------------------------------------------------- packet events

# An EventRecord (decode/raw.py: one unpack from the ring), a namedtuple whose
# fields the type checker cannot see.
AnyRecord = Any


class PacketEvent(NamedTuple):
    """One sighting of one packet at one hook, typed; the README documents its
    JSON line field by field (output/jsonl.py writes it, recording.py reads it).

    A named tuple: immutable, its fields in the JSON lines' order, and small
    (about 250 bytes, where a dataclass's dictionary of 26 fields took 830). A
    watch makes one per event and keeps each packet's first for as long as the
    packet is followed: what it weighs decides how much of the watch stays in
    the CPU's cache. The decoder builds one from its shape's values in one step."""

    ts: float
    hook: Hook
    iface: Optional[str]
    netns: int
    family: int
    proto: Proto
    src: str
    dst: str
    sport: Optional[int]
    dport: Optional[int]
    length: int
    ttl: int
    ip_id: Optional[int]
    tcp_flags: Optional[TcpFlags]
    seq: Optional[int]
    ack: Optional[int]
    icmp_type: Optional[int]
    icmp_code: Optional[int]
    reason: Optional[str]  # the kernel's own name for a drop (or RST) reason
    location: Optional[Location]
    state: Optional[StateChange]
    checksum: Optional[CsumVerdict]
    csum_field: Optional[int]
    skb: Optional[int]  # the skb's address: one packet's identity inside one kernel
    # ICMP errors: the packet they answer, as quoted in them (see quoted_packet)
    quoted: Optional[Quoted] = None
    # Kept by its skb after a rewrite (NAT): its tuple no longer matches the filter.
    tracked: bool = False

    @property
    def is_icmp(self) -> bool:
        return self.proto.is_icmp


# Where each per-packet field is in a PacketEvent (and in its shape's values).
(_F_TS, _F_LENGTH, _F_TTL, _F_IP_ID, _F_SEQ, _F_ACK, _F_CHECKSUM, _F_CSUM_FIELD, _F_SKB) = (
    PacketEvent._fields.index(name) for name in PER_PACKET_FIELDS)

# An event and its shape, as the decoder hands them on (None: an event of no
# shape, an ICMP error).
Decoded = tuple[PacketEvent, Optional[Shape]]


@dataclass(frozen=True)
class KernelCount:
    """One entry of the kernel's exact counts (pf_agg): packets of one kind at one
    hook, counted in the kernel whether or not their events were sent."""

    hook: Hook
    proto: Proto
    src: str
    dst: str
    sport: Optional[int]
    dport: Optional[int]
    tcp_flags: Optional[TcpFlags]
    icmp_type: Optional[int]
    reason: Optional[str]
    count: int


@dataclass
class WatchStats:
    """What the kernel counted of a watch: events matched, lost in the ring buffer
    and sampled out, per hook; events that found the exact-count table full; the
    last drain's events; the exact counts themselves; flows the correlator let go.
    The README's `stats` line."""

    matched: Mapping[Hook, int] = field(default_factory=dict)
    lost: Mapping[Hook, int] = field(default_factory=dict)
    sampled: Mapping[Hook, int] = field(default_factory=dict)
    agg_full: int = 0
    stopping_events: int = 0
    kernel_counts: tuple[KernelCount, ...] = ()
    flows_evicted: int = 0


class Decoder:
    """RawEvent -> PacketEvent, with the kernel's names for reasons, code
    addresses and interfaces supplied by the caller."""

    def __init__(self, drop_reason: Callable[[int], str | None],
                 locate: Callable[[int], Location], ifname: Callable[[int], str],
                 rst_reasons: dict[int, str] | None = None, boot_offset: float = 0.0,
                 local_netns: int = 0):
        self.drop_reason = drop_reason
        self.locate = locate
        self.ifname = ifname
        self.rst_reasons = rst_reasons or {}
        self.boot_offset = boot_offset
        # In whole microseconds: a timestamp is then one integer sum and one
        # division (_timestamp), the double nearest its 6-decimal value, as
        # round(..., 6) would give, at a tenth of round()'s cost.
        self._offset_us = round(boot_offset * 1e6)
        self.local_netns = local_netns  # interface hooks see only this namespace
        self._addresses: dict[tuple[bytes, int], str] = {}
        self._shapes: dict[bytes, Shape] = {}  # the raw shape fields -> Shape

    def _text(self, raw: bytes, family: int) -> str:
        """An address as text, remembered: a flow's packets repeat their two."""
        key = (raw, family)
        text = self._addresses.get(key)
        if text is None:
            if len(self._addresses) >= 65536:  # a scan of many hosts: start again
                self._addresses.clear()
            text = self._addresses[key] = _address(raw, family)
        return text

    def decode_batch(self, records: Iterable[tuple[Any, ...]]) -> list[Decoded]:
        """decode_shaped() for each record of a batch, in order: the ring reader's
        records of one drain. A record of a shape seen before takes the shared
        fields from the first one and works out only what changes from packet to
        packet. One loop for the batch: under a flood, a call per record would
        cost as much as the decoding."""
        shapes, offset_us = self._shapes, self._offset_us
        decoded: list[Decoded] = []
        append = decoded.append
        for raw in records:
            shape = shapes.get(raw[_SHARED])
            if shape is None:
                append(self._decode_shape(raw))
                continue
            values = shape.values.copy()  # the per-packet ones replaced below
            values[_F_TS] = (raw[_TS_NS] // 1000 + offset_us) / 1e6  # _timestamp, inline
            values[_F_LENGTH] = raw[_PKT_LEN]
            values[_F_TTL] = raw[_TTL]
            if shape.v4:
                values[_F_IP_ID] = raw[_IP_ID]
            if shape.tcp:
                values[_F_SEQ] = raw[_SEQ]
                values[_F_ACK] = raw[_ACK]
            if shape.snap_len:
                values[_F_CSUM_FIELD] = raw[_L4_CSUM]
                if shape.checked:
                    values[_F_CHECKSUM] = VERDICTS[raw[_CSUM_VERDICT]]
            values[_F_SKB] = raw[_SKB] or None
            append((_new_event(PacketEvent, values), shape))
        return decoded

    def _timestamp(self, ts_ns: int) -> float:
        """Seconds since the epoch to the microsecond (the kernel's clock is
        monotonic, in nanoseconds: the sub-microsecond part is cut off)."""
        return (ts_ns // 1000 + self._offset_us) / 1e6

    def _decode_shape(self, record: tuple[Any, ...]) -> Decoded:
        """The first record of its shape, decoded in full; the shape is remembered
        unless it is an ICMP error (what it quotes differs from packet to packet)."""
        raw: AnyRecord = full_record(record)
        ev = self._decode_all(raw)
        if is_icmp_error(ev.proto, ev.icmp_type):
            return ev, None
        if len(self._shapes) >= MAX_SHAPES:
            self._shapes.clear()
        values: list[object] = list(ev)
        values[_F_SKB] = None  # set per record, where it has one
        checked = bool(raw.snap_len) and ev.hook in ARRIVAL_HOOKS and ev.proto.has_ports
        shape = self._shapes[record[_SHARED]] = Shape(
            values, raw.family == 4, ev.proto is Proto.TCP, raw.snap_len, checked)
        return ev, shape

    def _decode_all(self, raw: AnyRecord) -> PacketEvent:
        """Every field from the record."""
        hook = Hook(raw.hook)
        proto = Proto(raw.proto)
        family = raw.family
        src, dst = self._text(raw.saddr, family), self._text(raw.daddr, family)
        tcp = proto is Proto.TCP
        icmp = proto.is_icmp or hook is Hook.ICMP_SEND
        icmp_type = raw.icmp_type
        ports = proto.has_ports or (proto.is_icmp and icmp_type in _ECHO_TYPES)
        snap_len = raw.snap_len
        return PacketEvent(
            ts=self._timestamp(raw.ts_ns),
            hook=hook,
            # An interface index is this namespace's to name; another's (a packet
            # followed into a container) would name the wrong one.
            iface=self.ifname(raw.ifindex) if raw.ifindex and
            raw.netns in (0, self.local_netns) else None,
            netns=raw.netns or self.local_netns,
            family=family,
            proto=proto,
            src=src,
            dst=dst,
            sport=raw.sport if ports else None,
            dport=raw.dport if ports else None,
            length=raw.pkt_len,
            ttl=raw.ttl,
            ip_id=raw.ip_id if family == 4 else None,
            tcp_flags=TcpFlags(raw.tcp_flags) if tcp else None,
            seq=raw.seq if tcp else None,
            ack=raw.ack_seq if tcp else None,
            icmp_type=icmp_type if icmp else None,
            icmp_code=raw.icmp_code if icmp else None,
            reason=self._reason(raw.reason, hook) if hook in _REASON_HOOKS else None,
            location=self.locate(raw.location) if raw.location else None,
            state=StateChange(TcpState(raw.state_old), TcpState(raw.state_new))
            if hook is Hook.SOCK_STATE else None,
            checksum=VERDICTS[raw.csum_verdict],
            csum_field=raw.l4_csum if snap_len else None,
            skb=raw.skb or None,
            quoted=quoted_packet(proto, icmp_type, bytes(raw.snap[:snap_len]))
            if hook is not Hook.ICMP_SEND else None,
            tracked=bool(raw.tracked),
        )

    def aggregate(self, key: RawAggKey, count: int) -> KernelCount:
        """One entry of the kernel's exact counts, typed as events are."""
        hook, proto = Hook(key.hook), Proto(key.proto)
        return KernelCount(hook, proto, _address(bytes(key.saddr), key.family),
                           _address(bytes(key.daddr), key.family), key.sport or None,
                           key.dport or None,
                           TcpFlags(key.tcp_flags) if proto is Proto.TCP else None,
                           key.icmp_type if proto.is_icmp else None,
                           self._reason(key.reason, hook), count)

    def _reason(self, number: int, hook: Hook) -> str | None:
        if hook is Hook.KFREE_SKB:
            return self.drop_reason(number)
        if hook is Hook.TCP_SEND_RESET and self.rst_reasons:
            return self.rst_reasons.get(number, f"RST_REASON_{number}")
        return None
