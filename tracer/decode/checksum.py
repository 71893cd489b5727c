"""pktfate's own look at a TCP/UDP checksum as a packet arrived: verified where
the whole segment was captured, and the offload signature (only the pseudo-header
sum in the field) recognised whatever the length."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass


def ones_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def pseudo_header_sum(src: str, dst: str, proto: int, l4_len: int) -> int:
    """Folded one's-complement sum of the TCP/UDP pseudo-header. A sender that
    leaves the checksum to its NIC puts exactly this value in the field."""
    s, d = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    if len(s) == 4:
        pseudo = s + d + struct.pack("!BBH", 0, proto, l4_len)
    else:
        pseudo = s + d + struct.pack("!IxxxB", l4_len, proto)
    return ones_sum(pseudo)


@dataclass(frozen=True)
class ChecksumCheck:
    """pktfate's own look at a TCP/UDP checksum as the packet arrived."""

    field: int  # the value in the header
    verdict: str  # "good", "bad", "pseudo-header-only" or "unchecked"


def check_l4_checksum(src: str, dst: str, proto: int, l4_len: int, csum: int,
                      segment: bytes) -> ChecksumCheck:
    """Verify when the whole segment was captured; recognise the offload signature
    (field == pseudo-header sum) whatever the length."""
    pseudo = pseudo_header_sum(src, dst, proto, l4_len)
    if proto == 17 and csum == 0:
        return ChecksumCheck(csum, "good")  # UDP over IPv4: no checksum
    if csum == pseudo and len(segment) < l4_len:
        return ChecksumCheck(csum, "pseudo-header-only")
    if len(segment) < l4_len:
        return ChecksumCheck(csum, "unchecked")
    total = ones_sum(segment[:l4_len])
    total += pseudo
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    if total == 0xFFFF:
        return ChecksumCheck(csum, "good")
    return ChecksumCheck(csum, "pseudo-header-only" if csum == pseudo else "bad")
