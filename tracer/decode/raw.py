"""Python mirrors of the C records the BPF programs write (bpf/event.h, bpf/filter.h),
one each. tests/unit/test_event_layout.py compiles the headers and checks sizes,
offsets and enum values against these."""

from __future__ import annotations

import ctypes
import struct
from collections import namedtuple
from collections.abc import Iterable, Sequence
from typing import Any, Union

from ..model.kinds import CsumVerdict, Hook

__all__ = ["CsumVerdict", "Hook"]  # for the layout test: the enums the C mirrors

# What the ring's bytes come in (a memoryview of the ring, or bytes in tests), and a
# record as the ring reader hands it over: RING_STRUCT's values, ints and bytes.
Buffer = Union[bytes, bytearray, memoryview]
RingRecord = tuple[Any, ...]

SNAP_LEN = 64
STAT_LOST = 16  # bpf/filter.h PF_STAT_LOST
STAT_SAMPLED = 32  # bpf/filter.h PF_STAT_SAMPLED
STAT_AGG_FULL = 48  # bpf/filter.h PF_STAT_AGG_FULL
STAT_SLOTS = 64  # bpf/filter.h PF_STAT_SLOTS
SETTING_NETNS = 0  # bpf/filter.h PF_SETTING_NETNS: index in pf_settings
PORT_WORDS = 1024  # bpf/filter.h PF_PORT_WORDS: the watched ports' bitmap, 64 per word


def port_bitmap(ports: Iterable[int]) -> dict[int, int]:
    """pf_ports's words that have a bit set: word (port // 64) -> bits."""
    words: dict[int, int] = {}
    for port in ports:
        words[port >> 6] = words.get(port >> 6, 0) | 1 << (port & 63)
    return words



# The kinds the records' enums mirror (enum pf_hook, enum pf_csum) are pktfate's
# own types: model/kinds.py. tests/unit/test_event_layout.py holds them equal.


class RawEvent(ctypes.Structure):
    """struct pf_event in bpf/event.h: the per-packet members, then the span of
    those every event of a shape shares (netns to snap)."""

    _fields_ = [
        ("ts_ns", ctypes.c_uint64),
        ("skb", ctypes.c_uint64),
        ("seq", ctypes.c_uint32),
        ("ack_seq", ctypes.c_uint32),
        ("pkt_len", ctypes.c_uint32),
        ("ip_id", ctypes.c_uint16),
        ("l4_csum", ctypes.c_uint16),
        ("l4_len", ctypes.c_uint16),
        ("ttl", ctypes.c_uint8),
        ("csum_verdict", ctypes.c_uint8),
        ("netns", ctypes.c_uint32),
        ("location", ctypes.c_uint64),
        ("saddr", ctypes.c_uint32 * 4),
        ("daddr", ctypes.c_uint32 * 4),
        ("ifindex", ctypes.c_uint32),
        ("reason", ctypes.c_uint32),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("snap_len", ctypes.c_uint16),
        ("hook", ctypes.c_uint8),
        ("family", ctypes.c_uint8),
        ("proto", ctypes.c_uint8),
        ("tcp_flags", ctypes.c_uint8),
        ("icmp_type", ctypes.c_uint8),
        ("icmp_code", ctypes.c_uint8),
        ("state_old", ctypes.c_uint8),
        ("state_new", ctypes.c_uint8),
        ("watched_port", ctypes.c_uint8),
        ("tracked", ctypes.c_uint8),
        ("snap", ctypes.c_uint8 * SNAP_LEN),
    ]


def _struct_of(fields: Sequence[tuple[Any, ...]]) -> struct.Struct:
    """A struct.Struct with the ctypes mirror's layout (little-endian, no padding:
    the C struct spells its padding out). Arrays read as bytes; the padding
    (members named _...) is skipped."""
    codes = {ctypes.c_uint64: "Q", ctypes.c_uint32: "I", ctypes.c_uint16: "H",
             ctypes.c_uint8: "B"}
    fmt = "<"
    for name, ctype in fields:
        if name.startswith("_"):
            fmt += f"{ctypes.sizeof(ctype)}x"  # padding: skipped, not read
        elif hasattr(ctype, "_length_"):
            fmt += f"{ctypes.sizeof(ctype)}s"
        else:
            fmt += codes[ctype]
    return struct.Struct(fmt)


# The same record decoded in one call: a tuple with RawEvent's field names
# (addresses and snap as bytes; padding left out), for the first event of a shape.
EVENT_STRUCT = _struct_of(RawEvent._fields_)
EVENT_FIELDS = tuple(field[0] for field in RawEvent._fields_ if not field[0].startswith("_"))
EventRecord = namedtuple("EventRecord", EVENT_FIELDS)  # type: ignore[misc]


_unpack_event = EVENT_STRUCT.unpack_from
_new_record = tuple.__new__  # _make() without its length check: the unpack fits by construction


def event_record(buffer: Buffer, offset: int = 0) -> EventRecord:
    return _new_record(EventRecord, _unpack_event(buffer, offset))


# The form the ring reader hands records over in: the per-packet fields one by
# one, the shared span (netns to snap) as one bytes string, then snap. The span
# keys the decoder's shapes as it is, and a record is a dozen objects, not thirty.
SHARED_START = RawEvent.netns.offset
SHARED_END = RawEvent.snap.offset
_PER_PACKET_RAW = RawEvent._fields_[:[f[0] for f in RawEvent._fields_].index("netns")]
RING_STRUCT = struct.Struct(_struct_of(_PER_PACKET_RAW).format
                            + f"{SHARED_END - SHARED_START}s{SNAP_LEN}s")
RING_FIELDS = (*(field[0] for field in _PER_PACKET_RAW if not field[0].startswith("_")),
               "shared", "snap")


def full_record(record: RingRecord) -> EventRecord:
    """The EventRecord of a record in the ring reader's form: the same bytes."""
    return event_record(RING_STRUCT.pack(*record))


class RawAggKey(ctypes.Structure):
    """struct pf_agg_key in bpf/event.h."""

    _fields_ = [
        ("saddr", ctypes.c_uint32 * 4),
        ("daddr", ctypes.c_uint32 * 4),
        ("reason", ctypes.c_uint32),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("hook", ctypes.c_uint8),
        ("family", ctypes.c_uint8),
        ("proto", ctypes.c_uint8),
        ("tcp_flags", ctypes.c_uint8),
        ("icmp_type", ctypes.c_uint8),
        ("_pad", ctypes.c_uint8 * 3),
    ]


class RawAggHot(ctypes.Structure):
    """struct pf_agg_hot in bpf/event.h: the key a hook keeps hot on one CPU, and
    that CPU's count for it, which takes over pf_agg's slot for that key and CPU."""

    _fields_ = [
        ("key", RawAggKey),
        ("count", ctypes.c_uint64),
        ("misses", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


AGG_HOT_SLOTS = 16  # bpf/event.h PF_AGG_HOT_SLOTS


def merge_agg_counts(hot: dict[tuple[bytes, int], int],
                     entries: list[tuple[bytes, list[int]]]) -> list[tuple[bytes, int]]:
    """Each pf_agg key's total over CPUs, from its per-CPU counts (`entries`) and
    the hot slots, (key, cpu) -> count, that take over their CPU's count for
    their key (bpf/filter.h, pf_aggregate)."""
    hot = dict(hot)
    totals = [(key, sum(hot.pop((key, cpu), n) for cpu, n in enumerate(counts)))
              for key, counts in entries]
    # A hot key has its pf_agg entry from the first count; in case one has not:
    leftover: dict[bytes, int] = {}
    for (key, _cpu), n in hot.items():
        leftover[key] = leftover.get(key, 0) + n
    return totals + list(leftover.items())
