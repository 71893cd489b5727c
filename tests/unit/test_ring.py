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
        """A record at position pos; returns the next record's position. Each byte
        goes to both views of the data, as the kernel's double mapping has it."""
        record = struct.pack("<II", len(payload) | flags, 0) + payload
        for i, byte in enumerate(record):
            at = (pos + i) % DATA
            self.producer[self.page + at] = self.producer[self.page + DATA + at] = byte
        return pos + ((len(payload) + 8 + 7) & ~7)

    def publish(self, pos: int) -> None:
        struct.pack_into("<Q", self.producer, 0, pos)


@pytest.fixture
def fake(monkeypatch):
    made = FakeMap()
    maps = iter([made.consumer, made.producer])
    monkeypatch.setattr(ring.mmap, "mmap", lambda *_args, **_kw: next(maps))
    return made


def _collect(reader: RingReader, budget: int = 100, size: int = 1) -> list[bytes]:
    """The records' first `size` bytes (shorter ones are passed over)."""
    return [fields[0] for fields in reader.read(struct.Struct(f"{size}s"), budget)]


def test_records_in_order_then_the_consumer_position(fake):
    reader = RingReader(0, DATA)
    pos = fake.write(0, b"first")
    pos = fake.write(pos, b"second!!")
    fake.publish(pos)
    assert _collect(reader, size=5) == [b"first", b"secon"]
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


def test_records_shorter_than_the_struct_are_passed_over(fake):
    reader = RingReader(0, DATA)
    pos = fake.write(0, b"long enough")
    pos = fake.write(pos, b"short")
    pos = fake.write(pos, b"long again!")
    fake.publish(pos)
    assert _collect(reader, size=11) == [b"long enough", b"long again!"]
    assert struct.unpack_from("<Q", fake.consumer, 0)[0] == pos


def test_a_record_across_the_end_of_the_data_reads_whole(fake):
    # The data area is mapped twice in a row: a record that wraps reads as one piece.
    reader = RingReader(0, DATA)
    start = DATA - 16
    struct.pack_into("<Q", fake.consumer, 0, start)
    pos = fake.write(start, b"x" * 40)
    fake.publish(pos)
    assert _collect(reader, size=40) == [b"x" * 40]


def test_a_run_of_same_sized_records_stops_at_the_first_still_being_written(fake):
    # The usual case (every event one struct): read in one pass up to the busy one.
    reader = RingReader(0, DATA)
    pos, starts = 0, []
    for n in range(20):
        starts.append(pos)
        pos = fake.write(pos, n.to_bytes(2, "little") * 12, BUSY_BIT if n == 12 else 0)
    fake.publish(pos)
    assert _collect(reader, size=24) == [n.to_bytes(2, "little") * 12 for n in range(12)]
    assert struct.unpack_from("<Q", fake.consumer, 0)[0] == starts[12]
    fake.write(starts[12], (12).to_bytes(2, "little") * 12)  # now written
    assert _collect(reader, budget=5, size=2) == [n.to_bytes(2, "little") for n in range(12, 17)]
    assert _collect(reader, size=2) == [n.to_bytes(2, "little") for n in range(17, 20)]
    assert struct.unpack_from("<Q", fake.consumer, 0)[0] == pos


def test_a_size_that_is_no_power_of_two_is_refused():
    with pytest.raises(ValueError, match="power of two"):
        RingReader(0, 3000)
