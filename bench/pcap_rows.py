"""The bench's --pcap rows alone, in one run: the packet rate with pktfate writing a
pcapng capture of every matching packet, and with tcpdump -w writing its own, each
relative to no tool; the watch's CPU per 1,000 events with and without --pcap. For
docs/BENCHMARKS.md without the whole bench (`sudo make bench` measures these too).

    sudo .venv/bin/python bench/pcap_rows.py
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # as bench/run.py does

from bench.flood import VethPair  # noqa: E402
from bench.run import (  # noqa: E402
    WATCHED,
    Pktfate,
    Sizes,
    Tcpdump,
    _filter_text,
    cpu_per_thousand,
    overhead,
)


def main() -> int:
    sizes = Sizes()
    pair = VethPair(f"pfp{os.getpid() % 10000}", 75).up()
    tmp = Path(tempfile.mkdtemp(prefix="pktfate-bench-pcap-"))
    try:
        pcap = Pktfate(WATCHED, "--pcap", str(tmp / "bench.pcapng"))
        rows = {
            f"pktfate ({_filter_text(WATCHED)}, --pcap FILE)": overhead(pair, pcap, sizes, tmp),
            f"pktfate ({_filter_text(WATCHED)})": overhead(pair, Pktfate(WATCHED), sizes, tmp),
            f"tcpdump -w ({_filter_text(WATCHED)})": overhead(pair, Tcpdump(WATCHED), sizes,
                                                               tmp),
        }
        for name, ratios in rows.items():
            print(f"| (a) rate with {name}, relative to none | {statistics.median(ratios):.2f} "
                  f"(range {min(ratios):.2f}-{max(ratios):.2f}, n={len(ratios)}) |")
        for label, extra in (("", ()), (" with --pcap", ("--pcap", str(tmp / "cpu.pcapng")))):
            cpu = cpu_per_thousand(pair, sizes, tmp, *extra)
            print(f"| (d) user-space CPU per 1,000 events{label} (ms) | "
                  f"{statistics.median(cpu):.2f} (range {min(cpu):.2f}-{max(cpu):.2f}, "
                  f"n={len(cpu)}) |")
    finally:
        pair.down()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
