"""The bench's rows for `pktfate agent` (f): its cost on the flood beside no tool
and `watch` (the packet rate with every drop counted, as a ratio within one run),
its user-space CPU idle and under the flood while scraped once a second, its
memory, and a scrape's time with the kernel tables full (every series at its cap).
Run by bench/run.py, or alone for docs/BENCHMARKS.md:

    sudo .venv/bin/python bench/agent_rows.py
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # as bench/run.py does

from bench.flood import VethPair  # noqa: E402
from bench.run import (  # noqa: E402
    WATCHED,
    Pktfate,
    Results,
    Sizes,
    Tool,
    _cpu_seconds,
    _status_kb,
    overhead,
)
from pktfate.lab.runner import AgentProcess  # noqa: E402


class Agent(Tool):
    """`pktfate agent`, host-wide: it counts the flood's every drop."""

    name = "pktfate agent (every drop counted)"

    def start(self, pair: VethPair, tmp: Path) -> None:  # noqa: ARG002 - Tool's signature
        self.agent = AgentProcess([], workdir=tmp).start()

    def stop(self) -> dict:
        rss = _status_kb(self.agent.pid)
        self.agent.stop(signal.SIGTERM)
        self.agent.output.unlink(missing_ok=True)
        return rss


def cpu_per_second(agent: AgentProcess, seconds: float, during=None) -> float:
    """The agent's own CPU (ms per second) over `seconds`, scraped once a second as
    Prometheus would; `during`: started first (a flood), waited for after."""
    before, start = _cpu_seconds(agent.pid), time.monotonic()
    proc = during() if during else None
    while time.monotonic() - start < seconds:
        time.sleep(1)
        agent.scrape()
    if proc is not None:
        proc.wait()
    return (_cpu_seconds(agent.pid) - before) / (time.monotonic() - start) * 1000


def scrape_at_caps(rounds: int) -> list[float]:
    """Milliseconds per scrape with every kernel table full: the agent's own
    programs loaded here, pf_drops and pf_sent filled from user space with distinct
    keys (256 namespaces, 128 functions), then the collector's page made as the HTTP
    server makes it: each scrape reads the whole tables."""
    from prometheus_client import CollectorRegistry, generate_latest

    from pktfate.agent.counters import AgentCounters, AgentLimits, RawDropKey, RawSentKey
    from pktfate.kernel.discovery import probe_kernel
    from pktfate.model.fleet import Runtime, Workload
    from pktfate.output.metrics import AgentCollector, AgentState

    kernel = probe_kernel()
    limits = AgentLimits()
    with AgentCounters(kernel, (), limits, kernel.drop_reason_name,
                       lambda addr: f"fn_{addr % 128}") as counters:
        maps = counters.maps  # the bench's own agent, filled to its caps
        for i in range(limits.drop_keys):
            key = RawDropKey(location=i, netns=4026530000 + i % 256, reason=2 + i % 40,
                             family=4, proto=6, dir=1)
            maps["pf_drops"].update(bytes(key), struct.pack("=Q", 1))
        for i in range(limits.sent_keys):
            sent = RawSentKey(netns=4026530000 + i % 256, kind=2, family=4, type=3, code=i % 16)
            maps["pf_sent"].update(bytes(sent), struct.pack("=Q", 1))
        registry = CollectorRegistry()
        registry.register(AgentCollector(counters.read, lambda _n: Workload(Runtime.HOST),
                                         AgentState("bench", {})))
        times, series = [], 0
        for _ in range(rounds):
            start = time.perf_counter()
            page = generate_latest(registry)
            times.append((time.perf_counter() - start) * 1000)
            series = page.count(b"\npktfate_drops_total{") + page.count(b"\npktfate_sent_total{")
        print(f"bench: {series} series per scrape at the caps", file=sys.stderr)
    return times


def add_agent_rows(results: Results, pair: VethPair, sizes: Sizes, tmp: Path,
                   watch_all: list[float] | None = None) -> None:
    ratios = overhead(pair, Agent(), sizes, tmp)
    results.add("(f) rate with pktfate agent (every drop counted), relative to none", ratios,
                "{:.2f}", ">= 0.97", statistics.median(ratios) >= 0.97)
    watch = watch_all if watch_all is not None else overhead(pair, Pktfate(WATCHED), sizes, tmp)
    results.add("(f) rate with pktfate watch (filter matches every packet), same run", watch,
                "{:.2f}", "", None)
    idle, flooded, rss = [], [], []
    flood_seconds = max(3.0, sizes.seconds * 3)

    def flood() -> subprocess.Popen:
        return subprocess.Popen(pair.flood_argv(WATCHED, 0, flood_seconds),
                                stdout=subprocess.DEVNULL)

    for _ in range(sizes.rounds):
        agent = AgentProcess([], workdir=tmp).start()
        try:
            # Long enough that the clock tick (10 ms of CPU) is a small part of it.
            idle.append(cpu_per_second(agent, 10.0))
            flooded.append(cpu_per_second(agent, flood_seconds, flood))
            rss.append(_status_kb(agent.pid).get("VmRSS", 0) / 1024)
        finally:
            agent.stop(signal.SIGTERM)
            agent.output.unlink(missing_ok=True)
    results.add("(f) agent's user-space CPU, idle, scraped once a second (ms per s)", idle,
                "{:.1f}", "", None)
    results.add("(f) agent's user-space CPU under the flood, scraped once a second (ms per s)",
                flooded, "{:.1f}", "", None)
    results.add("(f) agent's RSS (MB)", rss, "{:.0f}", "", None)
    results.add("(f) scrape with the kernel tables full (4,096 drop keys, 1,024 answer keys) "
                "(ms)", scrape_at_caps(max(3, sizes.rounds)), "{:.1f}", "", None)


def main() -> int:
    sizes = Sizes()
    pair = VethPair(f"pfa{os.getpid() % 10000}", 74).up()
    tmp = Path(tempfile.mkdtemp(prefix="pktfate-bench-agent-"))
    results = Results()
    try:
        add_agent_rows(results, pair, sizes, tmp)
    finally:
        pair.down()
        shutil.rmtree(tmp, ignore_errors=True)
    for what, result, target, verdict in results.rows:
        print(f"| {what} | {result} | {target} | {verdict} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
