"""What the tests read of the kernel's side that the product never does: the
ring reader's form of one record (the product reads whole runs), the skb tracking
table's slots, a map's info by id. Kept here, not in the product (issue 32)."""

from __future__ import annotations

import ctypes
import struct

from pktfate.decode.events import Decoder, PacketEvent
from pktfate.decode.raw import EVENT_STRUCT, RING_STRUCT, EventRecord
from pktfate.kernel import bpfsys


def ring_record(buffer: bytes, offset: int = 0) -> tuple:
    """A record as the ring reader hands it over (RING_STRUCT's tuple)."""
    return RING_STRUCT.unpack_from(buffer, offset)


def ring_form(record: EventRecord) -> tuple:
    """A record in the ring reader's form, from its EventRecord."""
    return RING_STRUCT.unpack(EVENT_STRUCT.pack(*record))


def decode_one(decoder: Decoder, record: EventRecord) -> PacketEvent:
    """One record decoded as a drain would (decode_batch), from its EventRecord."""
    return decoder.decode_batch((ring_form(record),))[0][0]


class RawTrackSlot(ctypes.Structure):
    """struct pf_track_slot in bpf/event.h: one slot of the skb tracking table."""

    _fields_ = [
        ("skb", ctypes.c_uint64),
        ("fp", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


MAP_GET_FD_BY_ID = 14
# struct bpf_map_info: the members read here, at their uapi offsets
_MAP_INFO_SIZE = 40
_MAP_INFO_ID, _MAP_INFO_KEY, _MAP_INFO_VALUE, _MAP_INFO_ENTRIES, _MAP_INFO_NAME = 4, 8, 12, 16, 24


def map_fd_by_id(map_id: int) -> int:
    attr = (ctypes.c_uint8 * 12)()
    struct.pack_into("I", attr, 0, map_id)
    return bpfsys.call(MAP_GET_FD_BY_ID, attr, "opening a map")


def map_info(fd: int) -> dict:
    """A map's id, name, key and value sizes, and its entries at most."""
    buf = bpfsys._obj_info(fd, _MAP_INFO_SIZE, "reading a map's info")
    name = buf.raw[_MAP_INFO_NAME:_MAP_INFO_NAME + bpfsys.OBJ_NAME_LEN].split(b"\0", 1)[0]
    return {"id": struct.unpack_from("I", buf, _MAP_INFO_ID)[0], "name": name.decode(),
            "key_size": struct.unpack_from("I", buf, _MAP_INFO_KEY)[0],
            "value_size": struct.unpack_from("I", buf, _MAP_INFO_VALUE)[0],
            "max_entries": struct.unpack_from("I", buf, _MAP_INFO_ENTRIES)[0]}
