"""The BPF ring buffer, read in batches straight from its memory.

The kernel maps a ring buffer map as: one consumer page (ours to write: how far
we have read), then one producer page (how far the programs have written),
then the data area twice in a row, so that a record that wraps around the end
reads as one piece. Each record is an 8-byte header (length, with a busy bit
while the program still writes it and a discard bit) then the data, rounded up
to 8 bytes. Reading it here, rather than through a C callback per record,
leaves one struct unpack per event as the whole cost of getting it.

Ordering: the kernel publishes a record by clearing its busy bit after writing
the data (a release store); the header is read here before the data. x86-64
keeps loads in order; other CPUs may not, and Python has no load barrier: there
a record could in principle read stale. pktfate is tested on x86-64."""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HEADER = 8
_POS = struct.Struct("<Q")
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
        self._data = page  # where the data area starts in the producer mapping
        self._mask = data_size - 1

    def read(self, handle: Callable[[memoryview, int, int], None], budget: int) -> int:
        """Call handle(view, offset, length) for each record written, `budget` at
        most; returns how many. What handle raises goes up, with the records up
        to and including that one consumed."""
        producer = self._producer
        consumer_pos = _POS.unpack_from(self._consumer, 0)[0]
        producer_pos = _POS.unpack_from(producer, 0)[0]
        done = 0
        try:
            while consumer_pos < producer_pos and done < budget:
                offset = self._data + (consumer_pos & self._mask)
                header = _LEN.unpack_from(producer, offset)[0]
                if header & BUSY_BIT:
                    break  # still being written: the next read takes it
                length = header & ~(BUSY_BIT | DISCARD_BIT)
                record_end = consumer_pos + ((length + HEADER + 7) & ~7)
                if header & DISCARD_BIT:
                    consumer_pos = record_end
                    continue
                try:
                    handle(self.view, offset + HEADER, length)
                finally:
                    consumer_pos = record_end
                    done += 1
        finally:
            _POS.pack_into(self._consumer, 0, consumer_pos)
        return done

    def close(self) -> None:
        self.view.release()
        self._producer.close()
        self._consumer.close()
