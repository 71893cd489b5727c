"""pktfate's own look at a TCP/UDP checksum as a packet arrived: verified where
the whole segment was captured, and the offload signature (only the pseudo-header
sum in the field) recognised whatever the length."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass


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


@dataclass(frozen=True)
class ChecksumCheck:
    """pktfate's own look at a TCP/UDP checksum as the packet arrived."""

    field: int  # the value in the header
    verdict: str  # "good", "bad", "pseudo-header-only" or "unchecked"


def check_l4_checksum(src: str, dst: str, proto: int, l4_len: int, csum: int,
                      segment: bytes) -> ChecksumCheck:
    """Verify when the whole segment was captured; recognise the offload signature
    (field == pseudo-header sum) whatever the length."""
    return ChecksumCheck(csum, l4_checksum_verdict(
        ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed, proto, l4_len,
        csum, segment))


def l4_checksum_verdict(src: bytes, dst: bytes, proto: int, l4_len: int, csum: int,
                        segment: bytes) -> str:
    """check_l4_checksum's verdict from the addresses' bytes."""
    return checksum_verdict(packed_pseudo_header_sum(src, dst, proto, l4_len), proto,
                            len(src) == 4, l4_len, csum, segment)


def with_length(pseudo_base: int, l4_len: int) -> int:
    """The pseudo-header sum from the sum of its other words (addresses and
    protocol: packed_pseudo_header_sum with a length of 0) and the length, a word
    of its own in both families (l4_len < 2**16). What the decoder works out once
    per flow and hook, and completes per packet."""
    total = (pseudo_base + l4_len) % 0xFFFF
    return total or 0xFFFF  # the protocol word is never 0: the sum is a non-zero multiple


def checksum_verdict(pseudo: int, proto: int, v4: bool, l4_len: int, csum: int,
                     segment: bytes) -> str:
    """The verdict from the pseudo-header sum: "good" when the whole segment was
    captured and sums right, "pseudo-header-only" when the field holds just the
    pseudo-header sum (the offload signature), else "bad" or "unchecked"."""
    if proto == 17 and csum == 0 and v4:
        return "good"  # UDP over IPv4: no checksum
    if len(segment) < l4_len:
        return "pseudo-header-only" if csum == pseudo else "unchecked"
    total = ones_sum(segment[:l4_len]) + pseudo
    total = (total & 0xFFFF) + (total >> 16)
    if total == 0xFFFF:
        return "good"
    return "pseudo-header-only" if csum == pseudo else "bad"
