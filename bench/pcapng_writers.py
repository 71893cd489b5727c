"""Why output/pcapng.py writes its own blocks: the cost per packet of its writer
against python-pcapng's (the maintained pure-Python pcapng writer), writing the
same enhanced packet blocks (64 bytes of data, a comment, the flags; ours also
makes the IP header and the fate's words, as it does for each event) to memory,
in one run, alternated. python-pcapng is not one of pktfate's dependencies: install it
into a scratch virtualenv beside pktfate's to run this.

    python bench/pcapng_writers.py [PACKETS]     prints each writer's µs per packet
"""

from __future__ import annotations

import io
import statistics
import sys
import time

from pktfate.decode.events import PacketEvent
from pktfate.model.kinds import Hook, Location
from pktfate.model.protocols import Proto, TcpFlags
from pktfate.output import pcapng as ours

DATA = bytes(range(64))
COMMENT = "DROPPED TCP_CSUM at tcp_v4_rcv"


def _event() -> PacketEvent:
    """A dropped SYN, as the decoder makes one."""
    return PacketEvent(
        ts=time.time(), hook=Hook.KFREE_SKB, iface=None, netns=1, family=4, proto=Proto.TCP,
        src="10.0.1.2", dst="10.0.2.2", sport=40000, dport=80, length=60, ttl=63, ip_id=1,
        tcp_flags=TcpFlags.SYN, seq=1, ack=0, icmp_type=None, icmp_code=None,
        reason="TCP_CSUM", location=Location("tcp_v4_rcv", 0x1a0), state=None,
        checksum=None, csum_field=0x1234, skb=1)


def with_ours(count: int) -> float:
    """The writer's own packet path: the IP header, the fate's words, the block."""
    writer = ours.PcapngWriter(io.BytesIO(), local_addrs=("10.0.2.2",))
    ev = _event()
    start = time.perf_counter()
    for _ in range(count):
        writer.stream.write(writer._packet(ev, DATA))
    return time.perf_counter() - start


def with_python_pcapng(count: int) -> float:
    from pcapng import FileWriter, blocks

    out = io.BytesIO()
    shb = blocks.SectionHeader(options={"shb_userappl": "bench"})
    shb.new_member(blocks.InterfaceDescription, link_type=101)
    writer = FileWriter(out, shb)
    start = time.perf_counter()
    for n in range(count):
        packet = shb.new_member(blocks.EnhancedPacket)
        packet.interface_id = 0
        packet.timestamp_high, packet.timestamp_low = n >> 32, n & 0xFFFFFFFF
        packet.packet_data = DATA
        packet.options["opt_comment"] = COMMENT
        packet.options["epb_flags"] = 1
        writer.write_block(packet)
    return time.perf_counter() - start


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    try:
        import pcapng  # noqa: F401
    except ImportError:
        print("python-pcapng is not installed here (see the docstring)", file=sys.stderr)
        return 2
    times: dict[str, list[float]] = {"ours": [], "python-pcapng": []}
    for _ in range(5):  # alternated: the machine's noise falls on both
        times["ours"].append(with_ours(count))
        times["python-pcapng"].append(with_python_pcapng(count))
    for name, runs in times.items():
        print(f"{name}: {statistics.median(runs) / count * 1e6:.2f} µs per packet")
    ratio = statistics.median(times["python-pcapng"]) / statistics.median(times["ours"])
    print(f"python-pcapng / ours: {ratio:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
