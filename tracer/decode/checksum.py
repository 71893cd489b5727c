"""Internet checksums for the probes pktfate sends (probe/plan.py). What an
arriving packet's own checksum says is judged in the kernel, where the packet
is (bpf/parse.h, pf_csum_verdict)."""

from __future__ import annotations

import ipaddress
import struct


def ones_sum(data: bytes) -> int:
    """Folded one's-complement sum of 16-bit big-endian words. 2**16 is 1 modulo
    0xFFFF, so the sum is the number the bytes spell, modulo 0xFFFF (one C-level
    operation instead of a word-by-word loop), with 0xFFFF for a non-zero
    multiple: the fold never yields 0 unless every word is 0."""
    if len(data) % 2:
        data += b"\0"
    number = int.from_bytes(data, "big")
    total = number % 0xFFFF
    return 0xFFFF if total == 0 and number else total


def pseudo_header_sum(src: str, dst: str, proto: int, l4_len: int) -> int:
    """Folded one's-complement sum of the TCP/UDP pseudo-header. A sender that
    leaves the checksum to its NIC puts exactly this value in the field."""
    return packed_pseudo_header_sum(ipaddress.ip_address(src).packed,
                                    ipaddress.ip_address(dst).packed, proto, l4_len)


def packed_pseudo_header_sum(src: bytes, dst: bytes, proto: int, l4_len: int) -> int:
    """The same from the addresses' bytes (4 or 16 each)."""
    if len(src) == 4:
        return ones_sum(src + dst + struct.pack("!BBH", 0, proto, l4_len))
    return ones_sum(src + dst + struct.pack("!IxxxB", l4_len, proto))
