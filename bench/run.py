"""pktfate's bench: overhead, event capacity, startup, CPU and memory, measured in
one session as ratios against runs without any tool (A B A B), never as absolute
timings. Writes a Markdown table; with --update-docs, into docs/BENCHMARKS.md.

    sudo make bench                     (the full run, about 5 minutes)
    sudo .venv/bin/python bench/run.py --smoke --out /tmp/bench.md
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.flood import VethPair  # noqa: E402
from pktfate.kernel import bpfsys  # noqa: E402
from pktfate.lab.runner import WatchProcess  # noqa: E402

DOCS = ROOT / "docs" / "BENCHMARKS.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
WATCHED, UNWATCHED = 9, 7777  # the flood's port; a port nobody floods


def _filter_text(port: int) -> str:
    return f"filter {'matches every packet' if port == WATCHED else 'matches nothing'}"


@dataclass(frozen=True)
class Sizes:
    seconds: float = 3.0  # per rate measurement
    rounds: int = 5  # A B alternations per tool
    capacity_rates: tuple[int, ...] = (50_000, 100_000, 200_000, 300_000, 400_000, 500_000)
    # every event sent to user space: Python's own pace, in steps fine enough
    # around the target of 50,000 to say where it stops
    unsampled_rates: tuple[int, ...] = (2_000, 5_000, 10_000, 20_000, 30_000, 40_000, 50_000,
                                        60_000, 70_000, 80_000)
    startups: int = 5
    flows: int = 64_000


SMOKE = Sizes(seconds=0.5, rounds=1, capacity_rates=(20_000,), unsampled_rates=(2_000,),
              startups=1, flows=2_000)


@dataclass
class Results:
    # (what, result, target, verdict)
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)

    def add(self, what: str, values: list[float], fmt: str, target: str, ok: bool | None) -> None:
        if not values:
            self.rows.append((what, "not measured", target, "n/a"))
            return
        med = statistics.median(values)
        spread = f" (range {fmt.format(min(values))}-{fmt.format(max(values))}, n={len(values)})" \
            if len(values) > 1 else ""
        verdict = "n/a" if ok is None else ("met" if ok else "missed")
        self.rows.append((what, fmt.format(med) + spread, target, verdict))

    def note(self, what: str, text: str, target: str = "") -> None:
        self.rows.append((what, text, target, "n/a"))


# ---------------------------------------------------------------- tools under test


class Tool:
    """Something attached to the receiving namespace during a flood."""

    name = "none"

    def start(self, pair: VethPair, tmp: Path) -> None:
        pass

    def stop(self) -> dict:
        return {}


class Pktfate(Tool):
    def __init__(self, port: int, *extra: str):
        self.port, self.extra = port, extra
        self.name = f"pktfate ({_filter_text(port)}{', ' if extra else ''}{' '.join(extra)})"
        self.watch: WatchProcess | None = None

    def start(self, pair: VethPair, tmp: Path) -> None:
        self.watch = WatchProcess(["--port", str(self.port), *self.extra],
                                  prefix=pair.exec_argv(pair.b, []), workdir=tmp).start()

    @property
    def started(self) -> float:
        assert self.watch is not None
        return self.watch.started

    @property
    def ready_after(self) -> float:
        assert self.watch is not None
        return self.watch.ready_after

    @property
    def out(self) -> Path:
        assert self.watch is not None
        return self.watch.output

    def stop(self) -> dict:
        assert self.watch is not None
        rss = _status_kb(self.watch.pid)
        lines = self.watch.stop()
        # Read, then gone: gigabytes of earlier runs' output left in the page cache
        # made the kernel throttle and reclaim while later runs wrote theirs, which
        # tripled a watch's system time by the end of the bench.
        self.watch.output.unlink(missing_ok=True)
        stats: dict = next((x for x in lines if x["kind"] == "stats"), {})
        return {"stats": stats, "events": sum(1 for x in lines if x["kind"] == "packet"),
                "flows": sum(1 for x in lines if x["kind"] == "flow"),
                "evicted": stats.get("flows_evicted", 0), **rss}


class Tcpdump(Tool):
    def __init__(self, port: int):
        self.port = port
        self.name = f"tcpdump -w ({_filter_text(port)})"

    def start(self, pair: VethPair, tmp: Path) -> None:
        self.dump = tmp / "dump.pcap"
        argv = ["tcpdump", "-i", "eth0", "-n", "-w", str(self.dump), "udp", "port",
                str(self.port)]
        self.proc = subprocess.Popen(pair.exec_argv(pair.b, argv), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()  # "listening on eth0, ..."
        if "listening" not in line:
            raise RuntimeError(f"tcpdump: {line.strip()}")

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGINT)
        self.proc.communicate(timeout=60)
        self.dump.unlink(missing_ok=True)  # as pktfate's output (Pktfate.stop)
        return {}


class Peer(Tool):
    """Another drop tracer, host-wide; ready when it says so on stdout or stderr."""

    def __init__(self, name: str, argv: list[str], ready_words: str, stdin: str = ""):
        self.name, self.argv, self.ready_words, self.stdin = name, argv, ready_words, stdin

    def available(self) -> str | None:
        """None when it runs here; else why not, in one line."""
        if shutil.which(self.argv[0]) is None:
            return f"{self.argv[0]} is not installed (make setup-dev)"
        try:
            self.start_argv(self.argv)
        except RuntimeError as exc:
            return str(exc)[:90]
        self.stop()
        return None

    def start_argv(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if self.stdin:
            self.proc.stdin.write(self.stdin)
            self.proc.stdin.flush()
        seen = []
        for line in self.proc.stdout:
            seen.append(line.strip())
            if self.ready_words in line:
                return
        self.proc.wait()
        raise RuntimeError(next((x for x in seen if x), f"exited {self.proc.returncode}"))

    def start(self, pair: VethPair, tmp: Path) -> None:  # noqa: ARG002 - Tool's signature
        # Host-wide tools (a tracepoint, the drop monitor): started where they
        # see the host's tracefs, as an operator would run them.
        self.start_argv(self.argv)

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
        return {}


PEERS = (
    Peer("bpftrace (a count per drop reason on skb:kfree_skb)",
         ["bpftrace", "-e", "tracepoint:skb:kfree_skb { @[args->reason] = count(); }"],
         "Attaching"),
    Peer("dropwatch -l kas", ["dropwatch", "-l", "kas"], "Kernel monitoring activated",
         stdin="start\n"),
)


# An empty program: r0 = 0; exit. Beside pktfate's own on skb:kfree_skb while the
# statistics run, its ns per run is what the statistics themselves cost a run
# (two clock reads and the accounting): the floor under every figure they give.
EMPTY_PROGRAM = struct.pack("<BBhi", 0xB7, 0, 0, 0) + struct.pack("<BBhi", 0x95, 0, 0, 0)
# At tc: r0 = -1 (TCX_NEXT, TC_ACT_UNSPEC): the verdict left to what comes next.
EMPTY_TC_PROGRAM = struct.pack("<BBhi", 0xB7, 0, 0, -1) + struct.pack("<BBhi", 0x95, 0, 0, 0)
TRACEFS = Path("/sys/kernel/tracing")


class StatsFloor:
    """The empty program on skb:kfree_skb, for as long as the `with` lasts."""

    def __enter__(self) -> StatsFloor:
        self.fds: list[int] = []
        prog = bpfsys.prog_load(bpfsys.PROG_TRACEPOINT, "bench_floor", EMPTY_PROGRAM)
        self.fds.append(prog)
        perf = bpfsys.perf_tracepoint(int((TRACEFS / "events/skb/kfree_skb/id").read_text()))
        self.fds.append(perf)
        try:
            self.fds.append(bpfsys.link_create(prog, perf, bpfsys.ATTACH_PERF_EVENT))
        except bpfsys.BpfError:
            bpfsys.perf_set_bpf(perf, prog)
        self.id = bpfsys.prog_info(prog)["id"]
        return self

    def __exit__(self, *exc) -> None:
        for fd in reversed(self.fds):
            os.close(fd)


class HooksAlone(Tool):
    """Empty programs where pktfate's refused packets cost it most: tc ingress (a
    tcx link) on the receiving side's eth0 and skb:kfree_skb's raw tracepoint,
    held by a process in that namespace until SIGINT. The rate with them is what
    any observer at those two hooks pays before its program does anything: the
    floor under pktfate's own ratio."""

    name = "empty programs at tc ingress and on skb:kfree_skb (the hooks' own cost)"
    CODE = (
        "import signal, socket\n"
        "from pktfate.kernel import bpfsys\n"
        "from pktfate.kernel.btf import BTF\n"
        "from bench.run import EMPTY_PROGRAM, EMPTY_TC_PROGRAM\n"
        "btf_id = BTF.from_file().raw_tracepoint('kfree_skb')[0]\n"
        "tp = bpfsys.prog_load(bpfsys.PROG_TRACING, 'bench_empty_tp', EMPTY_PROGRAM,\n"
        "                      attach_type=bpfsys.ATTACH_TRACE_RAW_TP, attach_btf_id=btf_id)\n"
        "links = [bpfsys.raw_tracepoint_open(tp)]\n"
        "tc = bpfsys.prog_load(bpfsys.PROG_SCHED_CLS, 'bench_empty_tc', EMPTY_TC_PROGRAM)\n"
        "links.append(bpfsys.link_create(tc, socket.if_nametoindex('eth0'),\n"
        "                                bpfsys.ATTACH_TCX_INGRESS))\n"
        "print('attached', flush=True)\n"
        "signal.sigwait([signal.SIGINT, signal.SIGTERM])\n")

    def start(self, pair: VethPair, tmp: Path) -> None:  # noqa: ARG002 - Tool's signature
        self.proc = subprocess.Popen(pair.exec_argv(pair.b, [sys.executable, "-c", self.CODE]),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     cwd=ROOT)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "attached":
            _, err = self.proc.communicate(timeout=30)
            raise RuntimeError(f"empty programs: {err.strip()[-300:]}")

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGINT)
        self.proc.communicate(timeout=30)
        return {}


class UdpSink:
    """A socket in the watched namespace reading whatever reaches `port`, for as
    long as the `with` lasts: each datagram it reads is consumed by the kernel
    (skb:consume_skb)."""

    CODE = ("import socket, sys\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.bind((sys.argv[1], int(sys.argv[2])))\n"
            "print('bound', flush=True)\n"
            "while True:\n"
            "    s.recv(2048)\n")

    def __init__(self, pair: VethPair, port: int):
        self.argv = pair.exec_argv(pair.b, [sys.executable, "-c", self.CODE, pair.addr_b,
                                            str(port)])

    def __enter__(self) -> UdpSink:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "bound":
            self.__exit__()
            raise RuntimeError("the bench's UDP sink did not start")
        return self

    def __exit__(self, *exc) -> None:
        self.proc.kill()
        self.proc.wait()


# The receiving namespace's ICMP error limits (per namespace where the kernel
# lists them there: the bench's own namespace, never the host's).
ICMP_LIMITS = {"icmp_ratelimit": "0", "icmp_msgs_per_sec": "1000000",
               "icmp_msgs_burst": "1000000"}


class IcmpUnlimited:
    """The bench's receiving namespace answers every packet it cannot deliver with
    an ICMP error, for as long as the `with` lasts, so that icmp:icmp_send runs
    per packet; the limits are put back after. `lifted`: False where the kernel
    keeps a limit for the whole host (older kernels): it is then left alone."""

    def __init__(self, pair: VethPair):
        self.pair = pair
        self.old: dict[str, str] = {}
        self.lifted = False

    def _sysctl(self, name: str, value: str | None = None) -> str:
        path = f"/proc/sys/net/ipv4/{name}"
        script = f"cat {path}" if value is None else f"echo {value} > {path}"
        return subprocess.run(self.pair.exec_argv(self.pair.b, ["sh", "-c", script]),
                              capture_output=True, text=True, check=True).stdout.strip()

    def __enter__(self) -> IcmpUnlimited:
        try:
            self.old = {name: self._sysctl(name) for name in ICMP_LIMITS}
        except subprocess.CalledProcessError:
            return self  # not per namespace here: left alone
        for name, value in ICMP_LIMITS.items():
            self._sysctl(name, value)
        self.lifted = True
        return self

    def __exit__(self, *exc) -> None:
        if self.lifted:
            for name, value in self.old.items():
                self._sysctl(name, value)


def _dropped(pair: VethPair, seconds: float) -> None:
    pair.flood(WATCHED, 0, seconds)


def _delivered(pair: VethPair, seconds: float) -> None:
    with UdpSink(pair, WATCHED):
        pair.flood(WATCHED, 0, seconds)


def _sent(pair: VethPair, seconds: float) -> None:
    pair.flood(WATCHED, 0, seconds, reverse=True)


def _answered(pair: VethPair, seconds: float) -> None:
    with IcmpUnlimited(pair):
        pair.flood(WATCHED, 0, seconds)


# Traffic that runs each of pktfate's programs once per packet: the receiving
# namespace drops it (XDP, tc ingress, kfree_skb), a socket there reads it
# (consume_skb), that namespace sends it (tc egress), or answers each with an ICMP
# error (icmp_send). Always to the port WATCHED: the filter is WATCHED or UNWATCHED.
WORKLOADS: dict[str, Callable[[VethPair, float], None]] = {
    "dropped": _dropped, "delivered": _delivered, "sent": _sent, "answered": _answered}


def hook_costs(pair: VethPair, port: int, sizes: Sizes, tmp: Path, *extra: str,
               workload: str = "dropped") -> dict[str, tuple]:
    """Each of pktfate's programs: nanoseconds per run and runs, from the kernel's
    BPF statistics, enabled (BPF_ENABLE_STATS: for as long as the bench holds the
    fd) only around one workload; "floor": the empty program's figure in the same
    workload. Run apart from the rate measurements: the statistics cost a run two
    clock reads. (BPF_PROG_TEST_RUN was tried as another measure: its own loop
    costs more per run than the programs do.)"""
    tool = Pktfate(port, *extra)
    tool.start(pair, tmp)
    assert tool.watch is not None
    try:
        ids = bpfsys.held_by(tool.watch.pid)["programs"]
        with StatsFloor() as floor:
            ids.add(floor.id)
            stats_fd = bpfsys.enable_stats()
            try:
                before = {i: bpfsys.info_by_id(i) for i in ids}
                WORKLOADS[workload](pair, sizes.seconds)
                after = {i: bpfsys.info_by_id(i) for i in ids}
            finally:
                os.close(stats_fd)
    finally:
        tool.stop()
    costs: dict[str, tuple] = {}
    for prog_id, old in before.items():
        new = after.get(prog_id)
        if not old or not new:
            continue
        runs = new["run_cnt"] - old["run_cnt"]
        if runs:
            name = "floor" if new["name"] == "bench_floor" else new["name"]
            costs[name] = ((new["run_time_ns"] - old["run_time_ns"]) / runs, runs, workload)
    return costs


# The workload that runs each program once per packet; the others, "dropped".
# (In "answered" tc egress sees the ICMP errors, which the filter always keeps.)
HOME_WORKLOAD = {"pf_tc_egress": "sent", "pf_consume_skb": "delivered",
                 "pf_icmp_send": "answered"}


def at_home(per_workload: dict[str, dict[str, tuple]]) -> dict[str, tuple]:
    """Each program's figure from its own workload (HOME_WORKLOAD); the floor from
    "dropped", where the empty program beside kfree_skb runs for every packet."""
    chosen: dict[str, tuple] = {}
    for workload, costs in per_workload.items():
        for name, figure in costs.items():
            if HOME_WORKLOAD.get(name, "dropped") == workload:
                chosen[name] = figure
    return chosen


def add_hook_costs(results: Results, port: int, costs: dict[str, tuple]) -> None:
    """Rows for hook_costs(): the statistics' figure for each program; with the floor
    taken off (the target's row for refused packets: what the program itself
    costs, the statistics' own clock reads left out)."""
    refused = port == UNWATCHED
    floor = costs.get("floor", (0.0, 0))[0]
    # A program its own traffic never ran in this run (a starved reader under load:
    # consume_skb with no datagram read) says so, rather than leaving its row out.
    for name, workload in sorted(HOME_WORKLOAD.items()):
        if name not in costs:
            results.note(f"(a) cost of {name} per run, {_filter_text(port)} (ns, bpf_stats)",
                         f"not measured: its traffic ({workload}) did not run it in this run")
    for name, (ns, runs, workload) in sorted(costs.items()):
        if name == "floor":
            results.add(f"(a) bpf_stats' own cost per run: an empty program on kfree_skb "
                        f"({_filter_text(port)}, ns)", [ns], "{:.0f}", "", None)
            continue
        results.add(f"(a) cost of {name} per run, {_filter_text(port)} (ns, bpf_stats)",
                    [ns], "{:.0f}", "", None)
        results.note("    runs", f"{runs:,} (traffic: {workload})")
        if refused and floor:
            results.add(f"(a) cost of {name} per refused packet, bpf_stats' floor taken off "
                        "(ns)", [ns - floor], "{:.0f}", "<= 60", ns - floor <= 60)


def tcpdrop_available() -> str | None:
    """None when bcc's tcpdrop runs here; else why not, in one line."""
    if shutil.which("tcpdrop-bpfcc") is None:
        return "tcpdrop-bpfcc is not installed (Debian's bpfcc-tools: make setup-dev)"
    proc = subprocess.Popen(["tcpdrop-bpfcc"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        proc.communicate()
        return None  # still running: it attached
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    lines = errors or err.strip().splitlines() or [f"exited with status {proc.returncode}"]
    return lines[0].strip()[:90]


def _status_kb(pid: int) -> dict:
    found = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key = line.split(":")[0]
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                found[key] = int(line.split()[1])
    except OSError:
        pass
    return found


# ---------------------------------------------------------------- measurements


def rate(pair: VethPair, seconds: float, pps: int = 0, flows: int = 1) -> float:
    before = pair.udp_no_ports()
    pair.flood(WATCHED, pps, seconds, flows)
    return (pair.udp_no_ports() - before) / seconds


def overhead(pair: VethPair, tool: Tool, sizes: Sizes, tmp: Path) -> list[float]:
    """Rate with the tool over the mean of the runs without it just before and after."""
    ratios = []
    baseline = rate(pair, sizes.seconds)
    for _ in range(sizes.rounds):
        tool.start(pair, tmp)
        try:
            with_tool = rate(pair, sizes.seconds)
        finally:
            tool.stop()
        after = rate(pair, sizes.seconds)
        ratios.append(with_tool / ((baseline + after) / 2))
        baseline = after
    return ratios


def versus(pair: VethPair, tool: Tool, other: Tool, sizes: Sizes, tmp: Path) -> list[float]:
    """Rate with `tool` over the rate with `other`, alternated (B A B A ...): what
    one setting costs against another in the same run."""
    def with_(t: Tool) -> float:
        t.start(pair, tmp)
        try:
            return rate(pair, sizes.seconds)
        finally:
            t.stop()
    ratios = []
    before = with_(other)
    for _ in range(sizes.rounds):
        mine, after = with_(tool), with_(other)
        ratios.append(mine / ((before + after) / 2))
        before = after
    return ratios


def capacity(pair: VethPair, sizes: Sizes, tmp: Path, rates: tuple[int, ...],
             *extra: str) -> tuple[int, list[str]]:
    """The highest paced drop rate at which every event reached user space (none lost),
    with the kernel's UdpNoPorts as the ground truth for how many there were."""
    best, notes = 0, []
    for pps in rates:
        tool = Pktfate(WATCHED, *extra)
        tool.start(pair, tmp)
        before = pair.udp_no_ports()
        pair.flood(WATCHED, pps, sizes.seconds)
        drops = pair.udp_no_ports() - before
        time.sleep(0.3)
        result = tool.stop()
        stats = result["stats"]
        lost = sum(stats.get("lost", {}).values())
        counted = stats.get("matched", {}).get("drop", 0)
        achieved = drops / sizes.seconds
        notes.append(f"{pps / 1000:g}k/s asked, {achieved / 1000:.0f}k/s dropped: {lost} lost")
        if lost == 0 and counted >= drops:
            best = max(best, int(achieved))
        else:
            break
    return best, notes


def startup(pair: VethPair, sizes: Sizes, tmp: Path) -> tuple[list[float], list[float]]:
    """Seconds from exec to the ready file, and to the first event (a slow paced
    flood runs throughout)."""
    ready_times, first_times = [], []
    for _ in range(sizes.startups):
        flood = subprocess.Popen(pair.flood_argv(WATCHED, 1000, 60), stdout=subprocess.DEVNULL)
        try:
            tool = Pktfate(WATCHED)
            tool.start(pair, tmp)
            ready_times.append(tool.ready_after)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if '"kind": "packet"' in tool.out.read_text():
                    first_times.append(time.monotonic() - tool.started)
                    break
                time.sleep(0.005)
            tool.stop()
        finally:
            flood.terminate()
            flood.wait()
    return ready_times, first_times


def _cpu_seconds(pid: int) -> float:
    """User and system CPU of one process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per_thousand(pair: VethPair, sizes: Sizes, tmp: Path, *extra: str) -> list[float]:
    """The watch process's own CPU per 1,000 events, decoding, correlation and JSON
    output included, every event sent: from ready to the end of a paced flood (the
    start-up and the final diagnosis left out; the flood's own CPU, and the kernel
    work it does sending and dropping, are another process's). `extra`: more
    options (--pcap: the capture written too)."""
    samples = []
    for _ in range(sizes.rounds):  # one run is noisy here: the median of as many as ratios take
        tool = Pktfate(WATCHED, "--sample-after", "0", *extra)
        tool.start(pair, tmp)
        assert tool.watch is not None
        before = _cpu_seconds(tool.watch.pid)
        pair.flood(WATCHED, 20_000, sizes.seconds * 3)
        time.sleep(0.3)  # the last drains
        cpu = _cpu_seconds(tool.watch.pid) - before
        events = tool.stop()["events"]
        if events:
            samples.append(cpu / events * 1000 * 1000)  # ms per 1000 events
    return samples


def memory(pair: VethPair, sizes: Sizes, tmp: Path) -> dict:
    """Peak RSS with `flows` distinct flows, every event sent to user space, at a pace
    user space keeps up with (so that every flow is seen)."""
    tool = Pktfate(WATCHED, "--sample-after", "0")
    tool.start(pair, tmp)
    assert tool.watch is not None
    at_ready = _status_kb(tool.watch.pid)
    pair.flood(WATCHED, 8_000, max(sizes.seconds, sizes.flows / 8_000), sizes.flows)
    time.sleep(0.3)
    return {"ready": at_ready, "end": tool.stop()}


# ---------------------------------------------------------------- report


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    return f"{os.cpu_count()} vCPU ({cpu}), kernel {platform.release()}"


def run(sizes: Sizes) -> Results:
    results = Results()
    pair = VethPair(f"pfb{os.getpid() % 10000}", 76).up()
    tmp = Path(tempfile.mkdtemp(prefix="pktfate-bench-"))
    try:
        medians = {}
        for key, tool in (("pf-none", Pktfate(UNWATCHED)), ("pf-all", Pktfate(WATCHED)),
                          ("td-none", Tcpdump(UNWATCHED)), ("td-all", Tcpdump(WATCHED))):
            medians[key] = overhead(pair, tool, sizes, tmp)
        tcpdump_all = statistics.median(medians["td-all"])
        for key, tool, target, ok in (
                ("pf-none", Pktfate(UNWATCHED), ">= 0.95",
                 statistics.median(medians["pf-none"]) >= 0.95),
                ("pf-all", Pktfate(WATCHED), f">= tcpdump's {tcpdump_all:.2f}",
                 statistics.median(medians["pf-all"]) >= tcpdump_all),
                ("td-none", Tcpdump(UNWATCHED), "", None), ("td-all", Tcpdump(WATCHED), "", None)):
            results.add(f"(a) rate with {tool.name}, relative to none", medians[key], "{:.2f}",
                        target, ok)
        # The pcapng capture beside the JSON, every packet matching: against tcpdump -w
        # writing its own capture of the same packets, in the same run.
        pcap = Pktfate(WATCHED, "--pcap", str(tmp / "bench.pcapng"))
        pcap.name = f"pktfate ({_filter_text(WATCHED)}, --pcap FILE)"
        with_pcap = overhead(pair, pcap, sizes, tmp)
        results.add(f"(a) rate with {pcap.name}, relative to none", with_pcap, "{:.2f}",
                    f">= tcpdump's {tcpdump_all:.2f}",
                    statistics.median(with_pcap) >= tcpdump_all)
        results.add(f"(a) rate with {HooksAlone.name}, relative to none",
                    overhead(pair, HooksAlone(), sizes, tmp), "{:.2f}", "", None)
        results.add("(a) rate with pktfate (filter matches nothing) over empty programs at the "
                    "same hooks: what its own programs add",
                    versus(pair, Pktfate(UNWATCHED), HooksAlone(), sizes, tmp), "{:.2f}", "",
                    None)
        for peer in PEERS:
            why = peer.available()
            if why:
                results.note(f"(a) rate with {peer.name}", f"not measured: {why}")
            else:
                results.add(f"(a) rate with {peer.name}, relative to none",
                            overhead(pair, peer, sizes, tmp), "{:.2f}", "", None)
        # XDP too, for its own cost (generic on a veth). Refused packets of each
        # kind of traffic; matching ones as they are dropped.
        add_hook_costs(results, UNWATCHED, at_home({
            name: hook_costs(pair, UNWATCHED, sizes, tmp, "--xdp-generic", workload=name)
            for name in WORKLOADS}))
        add_hook_costs(results, WATCHED, hook_costs(pair, WATCHED, sizes, tmp, "--xdp-generic"))
        # skb:kfree_skb's regular tracepoint (what --no-links and kernels without
        # BTF get) against its raw form above, in the same run.
        legacy = hook_costs(pair, UNWATCHED, sizes, tmp, "--no-links")
        if "pf_kfree_skb" in legacy and "floor" in legacy:
            results.add("(a) cost of pf_kfree_skb per refused packet as a regular tracepoint "
                        "(--no-links), bpf_stats' floor taken off (ns)",
                        [legacy["pf_kfree_skb"][0] - legacy["floor"][0]], "{:.0f}", "", None)
        for port in (UNWATCHED, WATCHED):  # following skbs past NAT (bpf/track.h)
            ratios = versus(pair, Pktfate(port), Pktfate(port, "--no-track"), sizes, tmp)
            results.add(f"(a) rate with skb tracking on over off ({_filter_text(port)})",
                        ratios, "{:.2f}", "", None)
        # Generic XDP (the only kind a veth gets from an observer) makes the kernel
        # give each skb XDP's headroom: what it would cost beside tc ingress, where
        # pktfate leaves it out unless asked (--xdp-generic).
        ratios = versus(pair, Pktfate(UNWATCHED, "--xdp-generic"), Pktfate(UNWATCHED), sizes,
                        tmp)
        results.add(f"(a) rate with --xdp-generic over without ({_filter_text(UNWATCHED)})",
                    ratios, "{:.2f}", "", None)
        why = tcpdrop_available()
        results.note("(a) rate with bcc's tcpdrop", f"not measured: {why}" if why else
                     "runs here (TCP drops only: no UDP flood to compare)")
        best, notes = capacity(pair, sizes, tmp, sizes.unsampled_rates, "--sample-after", "0")
        results.add("(b) zero-loss capacity, every event sent (drops/s)", [best], "{:,.0f}",
                    ">= 50,000", best >= 50_000)
        results.note("    steps", "; ".join(notes))
        best_s, notes_s = capacity(pair, sizes, tmp, sizes.capacity_rates)
        results.add("(b) zero-loss capacity, default sampling (drops/s)", [best_s], "{:,.0f}",
                    ">= 300,000", best_s >= 300_000)
        results.note("    steps", "; ".join(notes_s))
        ready, first = startup(pair, sizes, tmp)
        results.add("(c) startup: exec to ready file (s)", ready, "{:.2f}", "<= 1.0 median",
                    statistics.median(ready) <= 1.0 if ready else None)
        results.add("(c) startup: exec to first event (s)", first, "{:.2f}", "", None)
        cpu = cpu_per_thousand(pair, sizes, tmp)
        results.add("(d) user-space CPU per 1,000 events (ms)", cpu, "{:.2f}", "<= 5",
                    statistics.median(cpu) <= 5 if cpu else None)
        capture = tmp / "bench.pcapng"
        cpu_pcap = cpu_per_thousand(pair, sizes, tmp, "--pcap", str(capture))
        results.add("(d) user-space CPU per 1,000 events with --pcap (ms)", cpu_pcap, "{:.2f}",
                    "", None)
        # The agent (f): every drop counted, beside the watch's rate of this run.
        from bench.agent_rows import add_agent_rows

        add_agent_rows(results, pair, sizes, tmp, medians["pf-all"])
        mem = memory(pair, sizes, tmp)
        peak = mem["end"].get("VmHWM", 0) / 1024
        results.add("(e) peak RSS, flow table full (MB)", [peak], "{:.0f}", "", None)
        results.add("(e) RSS when ready, flow table empty (MB)",
                    [mem["ready"].get("VmRSS", 0) / 1024], "{:.0f}", "", None)
        results.note("    of which", f"{mem['end'].get('RssFile', 0) / 1024:.0f} MB file-backed "
                     f"at the end; RSS {mem['ready'].get('VmRSS', 0) / 1024:.0f}"
                     f" MB when ready, {mem['end'].get('VmRSS', 0) / 1024:.0f} MB after "
                     f"{sizes.flows:,} distinct source ports ({mem['end'].get('flows', 0):,} "
                     f"flows kept, {mem['end'].get('evicted', 0):,} evicted)")
    finally:
        pair.down()
        shutil.rmtree(tmp, ignore_errors=True)  # every watch's output: gigabytes by the end
    return results


def table(results: Results, sizes: Sizes) -> str:
    lines = [f"Machine: {machine()}. Date: {time.strftime('%Y-%m-%d')}. "
             f"{sizes.rounds} alternations of {sizes.seconds:g} s per ratio; UDP over a veth "
             "pair between two namespaces (bench/flood.c).", "",
             "| measure | result (median) | target | |", "|---|---|---|---|"]
    lines += [f"| {what} | {result} | {target} | {verdict} |"
              for what, result, target, verdict in results.rows]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks it runs")
    parser.add_argument("--out", type=Path, help="write the table here")
    parser.add_argument("--update-docs", action="store_true",
                        help=f"put the table into {DOCS.relative_to(ROOT)}")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench: needs root (namespaces, BPF): sudo make bench", file=sys.stderr)
        return 2
    sizes = SMOKE if args.smoke else Sizes()
    text = table(run(sizes), sizes)
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.update_docs:
        doc = DOCS.read_text()
        head, _, rest = doc.partition(BEGIN)
        _, _, tail = rest.partition(END)
        DOCS.write_text(f"{head}{BEGIN}\n{text}{END}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
