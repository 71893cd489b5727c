"""`watch --pcap FILE`: every watched packet as Wireshark and tshark open it with no
plugin, its fate in the packet's comment.

One interface block per hook and interface, named so that the hook shows as the
interface (`tc-ingress:eth0`, `xdp:eth0`, `kfree_skb`); the packet's direction in
its enhanced packet block's flags (inbound, outbound); its fate, in the words of
the terminal's report, in its comment (`DROPPED TCP_CSUM at tcp_v4_rcv`,
`answered by the kernel with RST`, `arrived tc eth0 ttl 63 csum
pseudo-header-only`). The diagnosis goes in the section header's comment.

What a packet's bytes are: the kernel hands each event the first bytes of the
transport header as the packet had them (the real checksum field, sequence
numbers, flags: SNAP_LEN bytes at most) and the fields it read of the IP header
(addresses, length, TTL, IPv4 id, protocol). The IP header written here is made of
those fields (link type RAW: no link layer); what the kernel did not read of it
is zero (TOS, fragment bits, flow label) and its own checksum is computed. The
transport bytes are the packet's own, cut at --snaplen.

A writer of its own, not a library's: the format's three blocks are a few struct
calls each, and python-pcapng (the maintained pure-Python writer) builds and
validates an object per block and per option: measured at 49 µs a packet against
this writer's 5 (its IP header and fate's words included; bench/pcapng_writers.py,
2026-12-07), where a flood brings tens of thousands of packets a second.

Memory is bounded: blocks go to the stream as they are made, flushed after each
drain, so the file is valid up to the last drain whenever the watch stops.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Sequence
from typing import BinaryIO

from ..decode.events import Decoded, PacketEvent
from ..decode.raw import EVENT_FIELDS, full_record
from ..model.kinds import INTERFACE_HOOKS, Hook
from .human import fate_text

SNAPLEN_MAX = 64  # transport bytes an event carries (bpf/event.h PF_SNAP_LEN)
LINKTYPE_RAW = 101  # an IPv4 or IPv6 packet, no link layer
_SHB, _IDB, _EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
_OPT_END, _OPT_COMMENT = 0, 1
_IF_NAME, _IF_DESCRIPTION, _IF_TSRESOL = 2, 3, 9
_EPB_FLAGS = 2
_INBOUND, _OUTBOUND = 1, 2  # epb_flags bits 0-1
_OPT_CUSTOM = 2989  # a custom option no reader interprets: the reserve's filler
_DOC_PEN = 32473  # IANA's enterprise number for documentation and examples
_SNAP_LEN = EVENT_FIELDS.index("snap_len")
# Room kept in the section header for the diagnosis, which comes at the end.
DIAGNOSIS_ROOM = 4096

# The interface-like name of each hook that has no interface.
_TRACEPOINT_NAMES = {Hook.KFREE_SKB: "kfree_skb", Hook.TCP_BAD_CSUM: "tcp_bad_csum",
                     Hook.TCP_SEND_RESET: "tcp_send_reset", Hook.ICMP_SEND: "icmp_send"}
_INTERFACE_NAMES = {Hook.XDP: "xdp", Hook.TC_INGRESS: "tc-ingress", Hook.TC_EGRESS: "tc-egress"}


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad(value)


def _block(kind: int, body: bytes) -> bytes:
    length = len(body) + 12
    return struct.pack("<II", kind, length) + body + struct.pack("<I", length)


def _section_header(comment: str, room: int | None) -> bytes:
    """The section header; with `room`, its options take exactly that many bytes (the
    comment cut to fit, a custom option filling the rest), so that it can be
    written again in place with another comment."""
    head = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
    end = _option(_OPT_END, b"")
    if room is None:
        return _block(_SHB, head + _option(_OPT_COMMENT, comment.encode()) + end)
    filler_min = 4 + 4  # the custom option's header and its enterprise number
    text = comment.encode()[:room - len(end) - filler_min - 4 - 3]
    used = len(_option(_OPT_COMMENT, text)) + len(end)
    filler = struct.pack("<I", _DOC_PEN) + b" " * (room - used - filler_min)
    options = _option(_OPT_COMMENT, text) + _option(_OPT_CUSTOM, filler) + end
    assert len(options) == room
    return _block(_SHB, head + options)


_PACKED: dict[str, bytes] = {}  # address text -> its bytes (a flood repeats a few)


def _packed(addr: str) -> bytes:
    found = _PACKED.get(addr)
    if found is None:
        if len(_PACKED) > 4096:
            _PACKED.clear()
        found = _PACKED[addr] = ipaddress.ip_address(addr).packed
    return found


def _ip_header(ev: PacketEvent, transport: int) -> bytes:
    """The IP header the event's fields give (see the module's docstring)."""
    src, dst = _packed(ev.src), _packed(ev.dst)
    if ev.family == 6:
        payload = max(ev.length - 40, transport)
        return struct.pack("!IHBB", 6 << 28, payload & 0xFFFF, int(ev.proto), ev.ttl) + src + dst
    total = max(ev.length, 20 + transport) & 0xFFFF
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, ev.ip_id or 0, 0, ev.ttl,
                         int(ev.proto), 0, src, dst)
    words = sum(struct.unpack("!10H", header))
    while words >> 16:
        words = (words & 0xFFFF) + (words >> 16)
    return header[:10] + struct.pack("!H", ~words & 0xFFFF) + header[12:]


class PcapngWriter:
    """Blocks to a binary stream: start(), packets() per drain, flush(), finish()."""

    def __init__(self, stream: BinaryIO, snaplen: int = SNAPLEN_MAX,
                 local_addrs: Iterable[str] = ()):
        self.stream = stream
        self.snaplen = min(snaplen, SNAPLEN_MAX)
        self.local = frozenset(local_addrs)
        self._interfaces: dict[tuple[Hook, str | None], int] = {}
        self._seekable = _seekable(stream)
        self._option_cache: dict[tuple, bytes] = {}
        self.written = 0  # packets

    def start(self, what: str) -> None:
        """The section header, its comment saying what is watched; the diagnosis
        replaces it at finish() where the stream can seek back (a file), else it
        follows in a section of its own (a pipe)."""
        comment = f"pktfate watch: {what} (the diagnosis replaces this when the watch ends)"
        self.stream.write(_section_header(comment, DIAGNOSIS_ROOM if self._seekable else None))

    def packets(self, decoded: Sequence[Decoded], records: Sequence[tuple]) -> None:
        """One drain's events and their records (aligned: decoded[i] is records[i])."""
        out = []
        for (ev, shape), record in zip(decoded, records):
            if ev.hook is Hook.SOCK_STATE:
                continue  # a socket's state, no packet
            snap_len = shape.snap_len if shape is not None else full_record(record)[_SNAP_LEN]
            out.append(self._packet(ev, record[-1][:min(snap_len, self.snaplen)]))
        if out:
            self.stream.write(b"".join(out))
            self.written += len(out)

    def _packet(self, ev: PacketEvent, transport: bytes) -> bytes:
        data = _ip_header(ev, len(transport)) + transport
        original = max(ev.length, len(data))
        stamp = int(ev.ts * 1_000_000)
        body = struct.pack("<IIIII", self._interface(ev), stamp >> 32, stamp & 0xFFFFFFFF,
                           len(data), original) + _pad(data) + self._options(ev)
        return _block(_EPB, body)

    def _options(self, ev: PacketEvent) -> bytes:
        """The comment and flags of a packet: the same for every packet of a flood's
        flow at one hook, so made once per kind of sighting (a bounded cache)."""
        key = (ev.hook, ev.iface, ev.src, ev.dst, ev.ttl, ev.checksum, ev.reason, ev.location,
               ev.icmp_type, ev.icmp_code, ev.tcp_flags, ev.state)
        found = self._option_cache.get(key)
        if found is None:
            comment = fate_text(ev)
            if ev.hook is Hook.TC_EGRESS and ev.src not in self.local:
                comment += " (forwarded)"
            found = _option(_OPT_COMMENT, comment.encode()) + \
                _option(_EPB_FLAGS, struct.pack("<I", self._direction(ev))) + \
                _option(_OPT_END, b"")
            if len(self._option_cache) > 4096:
                self._option_cache.clear()
            self._option_cache[key] = found
        return found

    def _direction(self, ev: PacketEvent) -> int:
        if ev.hook in (Hook.XDP, Hook.TC_INGRESS):
            return _INBOUND
        if ev.hook is Hook.TC_EGRESS:
            return _OUTBOUND
        if ev.dst in self.local:
            return _INBOUND
        return _OUTBOUND if ev.src in self.local else 0

    def _interface(self, ev: PacketEvent) -> int:
        iface = ev.iface if ev.hook in INTERFACE_HOOKS else None
        key = (ev.hook, iface)
        number = self._interfaces.get(key)
        if number is None:
            number = self._interfaces[key] = len(self._interfaces)
            if ev.hook in _INTERFACE_NAMES:
                name = f"{_INTERFACE_NAMES[ev.hook]}:{iface or '?'}"
            else:
                name = _TRACEPOINT_NAMES.get(ev.hook, f"hook{int(ev.hook)}")
            options = _option(_IF_NAME, name.encode()) + \
                _option(_IF_DESCRIPTION, f"pktfate hook {name}".encode()) + \
                _option(_IF_TSRESOL, b"\x06") + _option(_OPT_END, b"")
            self.stream.write(_block(_IDB, struct.pack("<HHI", LINKTYPE_RAW, 0, self.snaplen
                                                       + 40) + options))
        return number

    def flush(self) -> None:
        self.stream.flush()

    def finish(self, diagnosis: str) -> None:
        """The diagnosis into the section header (a file), or a section of its own
        after the packets (a pipe)."""
        if self._seekable:
            self.stream.flush()
            end = self.stream.tell()
            self.stream.seek(0)
            self.stream.write(_section_header(diagnosis, DIAGNOSIS_ROOM))
            self.stream.seek(end)
        else:
            self.stream.write(_section_header(diagnosis, None))
        self.stream.flush()


def _seekable(stream: BinaryIO) -> bool:
    try:
        return stream.seekable() and stream.tell() == 0
    except OSError:
        return False
