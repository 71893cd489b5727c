"""The checksums pktfate's probes carry, and the lab forwarder's header handling.
What an arriving packet's checksum says is judged in the kernel: real packets
test it (tests/integration/test_checksum_verdicts.py)."""

import random
import struct

from pktfate.decode.checksum import ones_sum, pseudo_header_sum
from pktfate.lab.forwarder import forward_ipv4, ip_header_checksum

SRC, DST = "10.0.1.2", "10.0.2.2"


def _syn(csum: int | None = None) -> bytes:
    header = bytearray(struct.pack("!HHIIBBHHH", 40312, 80, 1000, 0, 5 << 4, 0x02, 64240, 0, 0))
    if csum is None:
        total = ones_sum(bytes(header)) + pseudo_header_sum(SRC, DST, 6, len(header))
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        csum = ~total & 0xFFFF
    struct.pack_into("!H", header, 16, csum)
    return bytes(header)


def _word_by_word(data: bytes) -> int:
    """RFC 1071's loop, the reference ones_sum must agree with."""
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def test_ones_sum_agrees_with_the_word_by_word_sum():
    rng = random.Random(7)
    cases = [b"", b"\0", b"\0\0\0\0", b"\xff\xff", b"\xff\xff\xff\xff", b"\x01",
             b"\xff\xfe\x00\x01", bytes(range(256))]
    cases += [rng.randbytes(rng.randrange(1, 90)) for _ in range(2000)]
    for data in cases:
        assert ones_sum(data) == _word_by_word(data), data.hex()


def _ipv4(ttl: int) -> bytes:
    header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, ttl, 6, 0,
                                   bytes([10, 0, 1, 2]), bytes([10, 0, 2, 2])))
    struct.pack_into("!H", header, 10, ip_header_checksum(bytes(header)))
    return bytes(header) + _syn(0xBEEF)


def test_forwarder_decrements_ttl_and_keeps_payload():
    out = forward_ipv4(_ipv4(64))
    assert out[8] == 63
    assert struct.unpack_from("!H", out, 10)[0] == ip_header_checksum(out[:20])
    assert out[20:] == _ipv4(64)[20:]  # the TCP checksum is copied, not fixed


def test_forwarder_drops_expired_ttl():
    assert forward_ipv4(_ipv4(1)) is None


def test_stale_ip_checksum_mode_leaves_the_old_checksum():
    original = _ipv4(64)
    out = forward_ipv4(original, fix_ip_checksum=False)
    assert out[8] == 63
    assert out[10:12] == original[10:12]
    assert struct.unpack_from("!H", out, 10)[0] != ip_header_checksum(out[:20])
