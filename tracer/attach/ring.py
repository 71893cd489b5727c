"""The BPF ring buffer, read in batches straight from its memory.

The kernel maps a ring buffer map as: one consumer page (ours to write: how far
we have read), then one producer page (how far the programs have written),
then the data area twice in a row, so that a record that wraps around the end
reads as one piece. Each record is an 8-byte header (length, with a busy bit
while the program still writes it and a discard bit) then the data, rounded up
to 8 bytes. Reading it here, rather than through a C callback per record,
leaves one struct unpack per event, with no call per record, as the whole cost
of getting it.

Ordering: the kernel publishes a record by clearing its busy bit after writing
the data (a release store); the header is read here before the data. x86-64
keeps loads in order; other CPUs may not, and Python has no load barrier: there
a record could in principle read stale. pktfate is tested on x86-64."""

from __future__ import annotations

import mmap
import struct

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HEADER = 8
_LEN = struct.Struct("<I")


class RingReader:
    def __init__(self, map_fd: int, data_size: int):
        if data_size & (data_size - 1):
            raise ValueError("a ring buffer's size is a power of two")
        page = mmap.PAGESIZE
        self._consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED,
                                   mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._producer = mmap.mmap(map_fd, page + 2 * data_size, mmap.MAP_SHARED,
                                   mmap.PROT_READ, offset=page)
        self.view = memoryview(self._producer)
        # The two positions as whole 8-byte words: a memoryview item of format "Q"
        # is stored and loaded in one instruction, where struct's "<Q" goes byte by
        # byte and the kernel, reading the consumer position while it changes,
        # could see half of it.
        self._consumer_pos = memoryview(self._consumer).cast("Q")
        self._producer_pos = self.view[:8].cast("Q")
        self._data = page  # where the data area starts in the producer mapping
        self._mask = data_size - 1
        self._framed: dict[struct.Struct, struct.Struct] = {}  # record -> with its header

    def read(self, record: struct.Struct, budget: int) -> list[tuple]:
        """The records written since the last read, `budget` at most, each unpacked
        by `record` (records shorter than it are passed over). They are consumed:
        the kernel may write over them now."""
        consumer_pos = self._consumer_pos[0]
        producer_pos = self._producer_pos[0]
        records, consumer_pos = self._read_run(record, consumer_pos, producer_pos, budget)
        if consumer_pos < producer_pos and len(records) < budget:
            consumer_pos = self._read_each(record, consumer_pos, producer_pos,
                                           budget - len(records), records)
        self._consumer_pos[0] = consumer_pos
        return records

    def _read_run(self, record: struct.Struct, consumer_pos: int, producer_pos: int,
                  budget: int) -> tuple[list[tuple], int]:
        """The run of records from consumer_pos on that are all of exactly the
        struct's size, written and kept, unpacked in one call (iter_unpack, each
        header skipped as padding): the usual case, as every pktfate event is one
        struct pf_event. Stops before the first record that is not."""
        stride = (record.size + HEADER + 7) & ~7
        count = min((producer_pos - consumer_pos) // stride, budget)
        if count <= 0:
            return [], consumer_pos
        start = self._data + (consumer_pos & self._mask)
        run = self.view[start:start + count * stride]
        # Each record's header, read before its data: a clear busy bit means the
        # data is all there (the kernel's release store).
        headers = run.cast("I")[::stride // 4].tolist()
        if headers.count(record.size) != count:
            count = next(i for i, header in enumerate(headers) if header != record.size)
            run = run[:count * stride]
        framed = self._framed.get(record)
        if framed is None:
            framed = self._framed[record] = struct.Struct(
                f"<{HEADER}x{record.format.lstrip('<=')}{stride - HEADER - record.size}x")
        return list(framed.iter_unpack(run)), consumer_pos + count * stride

    def _read_each(self, record: struct.Struct, consumer_pos: int, producer_pos: int,
                   budget: int, records: list[tuple]) -> int:
        """Record by record, whatever their sizes and flags, into `records`; returns
        the new consumer position."""
        producer, unpack_from, size = self._producer, record.unpack_from, record.size
        data, mask = self._data, self._mask
        taken = 0
        while consumer_pos < producer_pos and taken < budget:
            offset = data + (consumer_pos & mask)
            header = _LEN.unpack_from(producer, offset)[0]
            if header & BUSY_BIT:
                break  # still being written: the next read takes it
            length = header & ~(BUSY_BIT | DISCARD_BIT)
            if not header & DISCARD_BIT and length >= size:
                records.append(unpack_from(producer, offset + HEADER))
                taken += 1
            consumer_pos += (length + HEADER + 7) & ~7
        return consumer_pos

    def close(self) -> None:
        self._consumer_pos.release()
        self._producer_pos.release()
        self.view.release()
        self._producer.close()
        self._consumer.close()
