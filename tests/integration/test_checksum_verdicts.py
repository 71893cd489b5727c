"""The kernel's verdict on each arriving packet's own checksum (bpf/parse.h,
pf_csum_verdict), on real packets: UDP and TCP over IPv4 and IPv6, built by hand
on a raw socket with a checksum that is right, wrong, only the pseudo-header sum
(the offload signature), absent (UDP), or on a segment longer than the snap. The
expected verdicts come from this file's own RFC 1071 sum, not pktfate's."""

from __future__ import annotations

import ipaddress
import json
import os
import struct
import subprocess
import sys

import pytest

from bench.flood import VethPair
from pktfate.lab.runner import WatchProcess

from .conftest import matching

pytestmark = pytest.mark.integration
PORT = 9
A6, B6 = "fd00:7a::1", "fd00:7a::2"


def _fold(total: int) -> int:
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _sum(data: bytes) -> int:
    """RFC 1071: the one's-complement sum of 16-bit big-endian words, folded."""
    data += b"\0" * (len(data) % 2)
    return _fold(sum(struct.unpack(f"!{len(data) // 2}H", data)))


def _pseudo(src: str, dst: str, proto: int, length: int) -> int:
    s, d = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    tail = struct.pack("!BBH", 0, proto, length) if len(s) == 4 else \
        struct.pack("!IxxxB", length, proto)
    return _sum(s + d + tail)


def _segment(proto: int, sport: int, payload: bytes, src: str, dst: str, kind: str) -> bytes:
    """A UDP or TCP (SYN) segment whose checksum is of `kind`: good, bad, pseudo
    (the pseudo-header sum alone) or zero."""
    if proto == 17:
        header = bytearray(struct.pack("!HHHH", sport, PORT, 8 + len(payload), 0))
        at = 6
    else:
        header = bytearray(struct.pack("!HHIIBBHHH", sport, PORT, 1000 + sport, 0, 5 << 4,
                                       0x02, 64240, 0, 0))
        at = 16
    segment = header + payload
    pseudo = _pseudo(src, dst, proto, len(segment))
    good = ~_fold(_sum(bytes(segment)) + pseudo) & 0xFFFF
    csum = {"good": good or 0xFFFF, "bad": (good + 0x0101) & 0xFFFF or 1, "pseudo": pseudo,
            "zero": 0}[kind]
    struct.pack_into("!H", segment, at, csum)
    return bytes(segment)


# (family, protocol, source port, payload bytes, checksum kind, the verdict wanted)
CASES = [
    (4, 17, 4001, 18, "good", "good"),
    (4, 17, 4002, 18, "bad", "bad"),
    (4, 17, 4003, 18, "pseudo", "pseudo-header-only"),
    (4, 17, 4004, 7, "good", "good"),  # an odd length: the last byte padded
    (4, 17, 4005, 7, "bad", "bad"),
    (4, 17, 4006, 18, "zero", "good"),  # UDP over IPv4 may go without one
    (4, 17, 4007, 56, "good", "good"),  # 64 bytes: exactly the snap
    (4, 17, 4008, 57, "bad", "unchecked"),  # one byte past the snap: not verifiable
    (4, 17, 4009, 300, "pseudo", "pseudo-header-only"),  # the signature, whatever the length
    (4, 6, 4010, 0, "good", "good"),
    (4, 6, 4011, 0, "bad", "bad"),
    (4, 6, 4012, 0, "pseudo", "pseudo-header-only"),
    (6, 17, 4013, 18, "good", "good"),
    (6, 17, 4014, 18, "bad", "bad"),
    (6, 17, 4015, 18, "pseudo", "pseudo-header-only"),
    (6, 17, 4016, 18, "zero", "bad"),  # not over IPv6 (RFC 8200)
    (6, 6, 4017, 0, "good", "good"),
    (6, 6, 4018, 0, "bad", "bad"),
]

SENDER = """
import socket, sys
for family, proto, dst, data in eval(sys.stdin.read()):
    s = socket.socket(socket.AF_INET if family == 4 else socket.AF_INET6, socket.SOCK_RAW, proto)
    s.sendto(data, (dst, 0))
    s.close()
"""


@pytest.fixture
def pair():
    pair = VethPair(f"pfk{os.getpid() % 10000}", 79)
    try:
        pair.up()
        for ns, addr in ((pair.a, A6), (pair.b, B6)):
            subprocess.run(["ip", "-n", ns, "addr", "add", f"{addr}/64", "dev", "eth0",
                            "nodad"], check=True)
        yield pair
    finally:
        pair.down()


def _send(pair: VethPair) -> None:
    packets = []
    for family, proto, sport, size, kind, _want in CASES:
        src, dst = (pair.addr_a, pair.addr_b) if family == 4 else (A6, B6)
        payload = bytes((sport + i) & 0xFF for i in range(size))
        packets.append((family, proto, dst, _segment(proto, sport, payload, src, dst, kind)))
    subprocess.run(pair.exec_argv(pair.a, [sys.executable, "-c", SENDER]), input=repr(packets),
                   text=True, check=True, timeout=30)


def test_each_arrivals_checksum_gets_the_kernels_verdict(pair, tmp_path):
    # XDP (generic, on a veth only when asked) and tc ingress both judge arrivals.
    watch = WatchProcess(["--port", str(PORT), "--xdp-generic"],
                         prefix=pair.exec_argv(pair.b, []), workdir=tmp_path).start()
    try:
        _send(pair)
        subprocess.run(pair.exec_argv(pair.a, ["ping", "-c", "1", "-W", "2", pair.addr_b]),
                       capture_output=True, timeout=10)  # behind the rest: all have arrived
        lines = watch.stop()
    finally:
        watch.kill()
    assert watch.returncode == 0, watch.stderr
    got = {}
    for family, proto, sport, _size, _kind, want in CASES:
        name = "udp" if proto == 17 else "tcp"
        for hook in ("xdp", "tc-ingress"):
            seen = matching(lines, kind="packet", hook=hook, proto=name, family=family,
                            sport=sport, dport=PORT)
            assert len(seen) == 1, (hook, sport, json.dumps(seen))
            got[(hook, sport)] = (seen[0]["checksum"], want)
    wrong = {key: pair for key, pair in got.items() if pair[0] != pair[1]}
    assert not wrong, wrong
    # Not arrivals: their checksums are not judged.
    assert all(line["checksum"] is None for line in
               matching(lines, kind="packet", hook="drop") + matching(lines, kind="packet",
                                                                      hook="tc-egress"))
