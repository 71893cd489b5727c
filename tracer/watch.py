"""The watch: probe the kernel, attach, stream events through correlation to the
output, and end with the diagnosis. Also the replay of a recorded watch."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO, TextIO

from . import __version__, firewall
from .correlate import Correlator
from .counters import delta, read_counters
from .decode import Decoder, PacketEvent
from .errors import PktfateError
from .explain import Evidence, diagnose
from .output import HumanOutput, JsonOutput
from .recording import read_recording

DRAIN_INTERVAL = 0.01  # seconds between ring-buffer drains (no wake-ups per event)


class Stop:
    """Set by SIGINT, SIGTERM or SIGHUP; the loop ends and everything detaches."""

    def __init__(self):
        self.signal: int | None = None
        self._previous = {}

    def __enter__(self) -> Stop:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame) -> None:
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class IfNames:
    def __init__(self):
        self._cache: dict[int, str] = {}

    def __call__(self, index: int) -> str:
        if index not in self._cache:
            try:
                self._cache[index] = socket.if_indextoname(index)
            except OSError:
                self._cache[index] = f"if{index}"
        return self._cache[index]


def _formatter(json_out: bool, stream: TextIO, show_all: bool):
    return JsonOutput(stream) if json_out else HumanOutput(stream, show_all)


def _banner(config, kernel, report, leftovers) -> list[str]:
    what = " ".join(f":{p}" for p in config.ports) or "all ports"
    hosts = f" hosts {', '.join(config.hosts)}" if config.hosts else ""
    lines = [f"pktfate {__version__}: watching {'/'.join(sorted(config.protos))} {what}{hosts}"
             f" (+ICMP), netns {'all' if config.all_netns else kernel.netns}"]
    xdp = ", ".join(f"{i} ({m})" for i, m in report.xdp.items()) or "none"
    lines.append(f"  XDP on {xdp}; tc on {', '.join(report.tc) or 'none'}")
    for item in list(kernel.missing) + report.skipped:
        lines.append(f"  missing: {item}")
    for record in leftovers:
        lines.append(f"  warning: run {record.get('pid')} ended without detaching: "
                     "run 'pktfate cleanup'")
    lines.append("  Ctrl-C to stop and see the diagnosis" if not config.duration else
                 f"  for {config.duration:g}s, then the diagnosis")
    return lines


def run_watch(config, stream: TextIO) -> int:
    """Watch until the duration ends or a signal arrives. Returns the exit status."""
    from . import loader  # only here: the rest of the package imports without bcc
    from .kernel import probe_kernel
    from .ksyms import KernelSymbols

    if os.geteuid() != 0:
        raise PktfateError("pktfate watch needs root (BPF and netlink): run it with sudo")
    kernel = probe_kernel()
    loader.select_interfaces(config)  # unknown interfaces fail before anything loads
    leftovers = loader.leftover_states()
    symbols = KernelSymbols.load()
    boot_offset = time.time() - time.clock_gettime(time.CLOCK_MONOTONIC)
    decoder = Decoder(kernel.drop_reason_name, symbols.name, IfNames(), kernel.rst_reasons,
                      boot_offset, local_netns=kernel.netns)
    local = loader.local_addresses()
    correlator = Correlator(local, config.ports)
    out = _formatter(config.json, stream, config.show_all)
    before = read_counters()
    rules_before = firewall.snapshot()

    def on_event(raw) -> None:
        ev = decoder.decode(raw)
        rec, first = correlator.feed(ev)
        out.event(ev, rec, first)

    with Stop() as stop, loader.Tracer(config, kernel, on_event) as tracer:
        start = {"version": __version__, "netns": kernel.netns, "local_addrs": sorted(local),
                 "ports": list(config.ports), "hosts": list(config.hosts),
                 "protos": sorted(config.protos), "xdp": tracer.report.xdp,
                 "tc": tracer.report.tc,
                 "missing": list(kernel.missing) + tracer.report.skipped,
                 "leftovers": [r.get("pid") for r in leftovers]}
        if config.json:
            out.start(start)
        else:
            out.start(_banner(config, kernel, tracer.report, leftovers))
        if config.ready_file:
            _write_ready_file(config.ready_file)
        deadline = time.monotonic() + config.duration if config.duration else None
        try:
            while stop.signal is None and (deadline is None or time.monotonic() < deadline):
                time.sleep(DRAIN_INTERVAL)
                tracer.drain()
            # Once stopped, one bounded drain: the time to stop does not grow with
            # the flood that may be going on.
            stopping = tracer.drain()
            stats = tracer.stats()
            stats["stopping_events"] = stopping
            stats["kernel_counts"] = [decoder.aggregate(key, count)
                                      for key, count in tracer.aggregates()]
        finally:
            if config.ready_file:
                Path(config.ready_file).unlink(missing_ok=True)
    counters = delta(before, read_counters())
    context = {"firewall": firewall.moved_verdict_rules(rules_before, firewall.snapshot())}
    flows = correlator.finish()
    stats["flows_evicted"] = correlator.evicted_flows
    context["routes"] = {peer: dict(loader.route_back(peer), rp_filter=rp_filter_settings())
                         for peer in _peers_to_route(flows)}
    context["offload"] = {iface: loader.tx_checksum_offload(iface)
                          for iface in _checksum_drop_ifaces(flows)}
    _finish(out, flows, counters, stats, config.ports, context)
    return 0


def _write_ready_file(path: Path) -> None:
    try:
        Path(path).write_text(f"{os.getpid()}\n")
    except OSError as exc:  # checked before attaching, but the directory may go
        raise PktfateError(f"cannot write the ready file {path}: {exc.strerror}") from exc


CHECKSUM_REASONS = ("TCP_CSUM", "UDP_CSUM", "IP_CSUM")


def _checksum_drop_ifaces(flows) -> set[str]:
    """Interfaces where packets arrived that the kernel then dropped for a checksum."""
    return {where.split()[-1] for f in flows if any(f.drops.get(r) for r in CHECKSUM_REASONS)
            for where in f.arrived_on}


def _peers_to_route(flows) -> set[str]:
    """Peers whose way back matters: reverse-path drops, SYNs left unanswered."""
    return {f.peer for f in flows
            if f.drops.get("IP_RPFILTER") or f.syn_fates.get("unanswered")}


def rp_filter_settings() -> dict[str, int]:
    """net.ipv4.conf.*.rp_filter of this namespace (the kernel uses the maximum of
    'all' and the interface's own)."""
    found = {}
    for path in sorted(Path("/proc/sys/net/ipv4/conf").glob("*/rp_filter")):
        try:
            value = int(path.read_text())
        except (OSError, ValueError):
            continue
        if value or path.parent.name == "all":
            found[path.parent.name] = value
    return found


def _finish(out, flows, counters: dict, stats: dict, ports: Iterable[int],
            context: dict) -> None:
    lost = sum(stats.get("lost", {}).values())
    findings = diagnose(Evidence(flows, counters, tuple(ports), lost,
                                 context.get("firewall", []), context.get("routes", {}),
                                 context.get("offload", {}),
                                 sampled=sum(stats.get("sampled", {}).values()),
                                 kernel_counts=stats.get("kernel_counts", [])))
    out.finish(flows, findings, stats, counters, context)


def run_explain(stream: BinaryIO, out_stream: TextIO, json_out: bool) -> int:
    """Diagnose again from a recorded `watch --json` output."""
    correlator: Correlator | None = None

    def on_event(start: dict, ev: PacketEvent) -> None:
        nonlocal correlator
        if correlator is None:
            correlator = Correlator(set(start["local_addrs"]), tuple(start["ports"]))
        correlator.feed(ev)

    rec = read_recording(stream, __version__, on_event)
    if correlator is None:
        correlator = Correlator(set(rec.start["local_addrs"]), tuple(rec.start["ports"]))
    out = _formatter(json_out, out_stream, False)
    _finish(out, correlator.finish(), rec.counters, rec.stats, rec.start["ports"], rec.context)
    return 0
