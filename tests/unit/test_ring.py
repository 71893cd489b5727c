"""The ring-buffer reader's walk over records (attach/ring.py), on a memory laid
out as the kernel lays a ring buffer map out. The real map: every integration
test's watch reads its events through it."""

import mmap
import struct

import pytest

from pktfate.attach import ring
from pktfate.attach.ring import BUSY_BIT, DISCARD_BIT, RingReader

DATA = 4096  # one page of data


class FakeMap:
    """A consumer page, a producer page and the data area mapped twice, from an
    anonymous memory the test writes as the kernel would."""

    def __init__(self):
        page = mmap.PAGESIZE
        self.consumer = mmap.mmap(-1, page)
        self.producer = mmap.mmap(-1, page + 2 * DATA)
        self.page = page

    def write(self, pos: int, payload: bytes, flags: int = 0) -> int:
        """A record at position pos; returns the next record's position."""
        for base in (0, DATA):  # both views of the data
            off = self.page + ((pos + base) & (2 * DATA - 1) if base else pos % DATA)
            struct.pack_into("<II", self.producer, off, len(payload) | flags, 0)
            self.producer[off + 8: off + 8 + len(payload)] = payload
        return pos + ((len(payload) + 8 + 7) & ~7)

    def publish(self, pos: int) -> None:
        struct.pack_into("<Q", self.producer, 0, pos)


@pytest.fixture
def fake(monkeypatch):
    made = FakeMap()
    maps = iter([made.consumer, made.producer])
    monkeypatch.setattr(ring.mmap, "mmap", lambda *_args, **_kw: next(maps))
    return made


def _collect(reader: RingReader, budget: int = 100) -> list[bytes]:
    got = []
    reader.read(lambda view, off, n: got.append(bytes(view[off:off + n])), budget)
    return got


def test_records_in_order_then_the_consumer_position(fake):
    reader = RingReader(0, DATA)
    pos = fake.write(0, b"first")
    pos = fake.write(pos, b"second!!")
    fake.publish(pos)
    assert _collect(reader) == [b"first", b"second!!"]
    assert struct.unpack_from("<Q", fake.consumer, 0)[0] == pos == 16 + 16
    assert _collect(reader) == []  # nothing new


def test_busy_stops_discarded_is_skipped_budget_is_kept(fake):
    reader = RingReader(0, DATA)
    pos = fake.write(0, b"a")
    pos = fake.write(pos, b"gone", DISCARD_BIT)
    pos = fake.write(pos, b"b")
    busy_at = pos
    pos = fake.write(pos, b"c", BUSY_BIT)
    fake.publish(pos)
    assert _collect(reader, budget=1) == [b"a"]
    assert _collect(reader) == [b"b"]  # stops at the record still being written
    assert struct.unpack_from("<Q", fake.consumer, 0)[0] == busy_at


def test_a_handler_error_consumes_its_record_and_goes_up(fake):
    reader = RingReader(0, DATA)
    pos = fake.write(0, b"bad")
    pos = fake.write(pos, b"next")
    fake.publish(pos)

    def handle(*_record):
        raise BrokenPipeError

    with pytest.raises(BrokenPipeError):
        reader.read(handle, 10)
    assert _collect(reader) == [b"next"]


def test_a_size_that_is_no_power_of_two_is_refused():
    with pytest.raises(ValueError, match="power of two"):
        RingReader(0, 3000)
