"""`pktfate watch`: a watch session streamed through correlation to the output,
ended with the host's context and the diagnosis. Also its replay, `pktfate
explain`, from a recording."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import BinaryIO, TextIO

from . import __version__
from .correlate.correlator import Correlator
from .decode.events import Decoded, PacketEvent, WatchStats
from .decode.recording import RecordedStart, context_of_json, read_recording
from .decode.typed import parse, to_json
from .diagnosis.diagnose import diagnose
from .diagnosis.evidence import Evidence, Finding
from .errors import PktfateError
from .host import context as host_context
from .host import firewall
from .host.counters import delta, read_counters
from .host.identity import host_identity
from .model.host import FirewallRule, HostContext
from .output.human import HumanOutput, diagnosis_text
from .output.jsonl import JsonOutput
from .output.pcapng import PcapngWriter
from .session import WatchSession, require_root

ICMP_SEND = "icmp/icmp_send"  # the tracepoint of the ICMP errors this host sends


def _formatter(json_out: bool, stream: TextIO, show_all: bool):
    return JsonOutput(stream) if json_out else HumanOutput(stream, show_all)


def run_watch(config, stream: TextIO, pcap: BinaryIO | None = None) -> int:
    """Watch until the duration ends or a signal arrives. Returns the exit status.
    `pcap`: where the pcapng capture goes (--pcap), opened by the caller."""
    from .host.netlink import local_addresses

    require_root("watch", "BPF and netlink")
    local = local_addresses()
    correlator = Correlator(local, config.ports)
    out = _formatter(config.json, stream, config.show_all)
    capture = PcapngWriter(pcap, config.snaplen, local) if pcap is not None else None
    before = read_counters()
    rules_before = firewall.snapshot()

    feed, emit = correlator.feed_batch, out.events

    def on_batch(batch: list[Decoded]) -> None:
        emit(batch, feed(batch))

    def flush() -> None:
        out.flush()
        if capture is not None:
            capture.flush()

    with WatchSession(config, on_batch,
                      on_records=capture.packets if capture is not None else None) as session:
        kernel, report = session.kernel, session.tracer.report
        correlator.errors_from_egress = not kernel.has(ICMP_SEND)
        out.start({"version": __version__, "netns": kernel.netns, "all_netns": config.all_netns,
                   "local_addrs": sorted(local), "ports": list(config.ports),
                   "hosts": list(config.hosts), "protos": sorted(config.protos),
                   "duration": config.duration, "xdp": report.xdp,
                   "xdp_left_out": report.xdp_left_out, "tc": report.tc,
                   "missing": list(kernel.missing) + report.skipped + report.held_by_process(),
                   "attach": {**report.attach, "bpf_object": report.bpf_object},
                   "leftovers": [r.get("pid") for r in session.leftovers],
                   "host": to_json(host_identity(kernel.netns))})
        if capture is not None:
            capture.start(f"ports {' '.join(map(str, config.ports)) or 'all'}, netns "
                          f"{kernel.netns}")
        if config.ready_file:
            _write_ready_file(config.ready_file)
        try:
            session.run(deadline=time.monotonic() + config.duration if config.duration
                        else None, after_drain=flush)
            stats = session.final_stats()
        finally:
            if config.ready_file:
                Path(config.ready_file).unlink(missing_ok=True)
    counters = delta(before, read_counters())
    moved = firewall.moved_verdict_rules(rules_before, firewall.snapshot())
    flows = correlator.finish()
    stats.flows_evicted = correlator.evicted_flows
    gathered = host_context.gather(flows, config.ports, _checksum_drop_ifaces(flows))
    gathered["ipsets"] = firewall.ipsets(rule["rule"] for rule in moved)
    # Through the recording reader's road: what the rules see live is what a
    # replay of this watch's JSON will see.
    context = context_of_json(gathered, parse(tuple[FirewallRule, ...], moved))
    findings = _finish(out, flows, counters, stats, config.ports, context)
    if capture is not None:
        capture.finish(diagnosis_text(findings))
    return 0


def _write_ready_file(path: Path) -> None:
    try:
        Path(path).write_text(f"{os.getpid()}\n")
    except OSError as exc:  # checked before attaching, but the directory may go
        raise PktfateError(f"cannot write the ready file {path}: {exc.strerror}") from exc


CHECKSUM_REASONS = ("TCP_CSUM", "UDP_CSUM", "IP_CSUM")


def _checksum_drop_ifaces(flows) -> set[str]:
    """Interfaces where packets arrived that the kernel then dropped for a checksum."""
    return {where.iface for f in flows if any(f.drops.get(r) for r in CHECKSUM_REASONS)
            for where in f.arrived_on if where.iface}


def _diagnose(flows, counters: dict[str, int], stats: WatchStats, ports: Iterable[int],
              context: HostContext) -> list[Finding]:
    return diagnose(Evidence(flows, counters, tuple(ports), sum(stats.lost.values()),
                             sampled=sum(stats.sampled.values()),
                             kernel_counts=list(stats.kernel_counts), host=context))


def _finish(out, flows, counters: dict[str, int], stats: WatchStats, ports: Iterable[int],
            context: HostContext) -> list[Finding]:
    findings = _diagnose(flows, counters, stats, ports, context)
    out.finish(flows, findings, stats, counters, context)
    return findings


def _replay_correlator(start: RecordedStart) -> Correlator:
    correlator = Correlator(set(start.local_addrs), start.ports)
    # As the watch decided: no icmp_send events without the tracepoint, nor without
    # BTF (then no tracepoint is attached at all).
    correlator.errors_from_egress = any(
        m == f"tracepoint {ICMP_SEND}" or m.startswith("kernel BTF") for m in start.missing)
    return correlator


def replay(stream: BinaryIO):
    """A recorded `watch --json` output read again: its flows correlated anew,
    with the recording's start and its end (counters, stats, context)."""
    correlator: Correlator | None = None

    def on_event(start: RecordedStart, ev: PacketEvent) -> None:
        nonlocal correlator
        if correlator is None:
            correlator = _replay_correlator(start)
        correlator.feed(ev)

    start, rec = read_recording(stream, __version__, on_event)
    if correlator is None:
        correlator = Correlator(set(start.local_addrs), start.ports)
    return start, rec, correlator.finish()


def diagnose_recording(stream: BinaryIO) -> tuple[list[Finding], WatchStats]:
    """What `pktfate explain` concludes from a recording (the agent's incidents),
    and the recording's own counts (events lost among them)."""
    start, rec, flows = replay(stream)
    return _diagnose(flows, rec.counters, rec.stats, start.ports, rec.context), rec.stats


def run_explain(stream: BinaryIO, out_stream: TextIO, json_out: bool) -> int:
    """Diagnose again from a recorded `watch --json` output."""
    start, rec, flows = replay(stream)
    out = _formatter(json_out, out_stream, False)
    _finish(out, flows, rec.counters, rec.stats, start.ports, rec.context)
    return 0


def run_explain_merged(recordings: Sequence[tuple[str, BinaryIO]], out: TextIO,
                       json_out: bool) -> int:
    """`pktfate explain A B ...`: the recordings merged into each packet's path, the
    diagnosis over the paths, and each host's own top finding."""
    from .output.paths_report import write_json, write_text
    from .paths.findings import diagnose_paths
    from .paths.merge import load, merge

    hosts = [load(name, stream, __version__) for name, stream in recordings]
    merged = merge(hosts)
    own = {}
    for host in merged.hosts:
        correlator = _replay_correlator(host.start)
        for ev in host.events:
            correlator.feed(ev)
        rec = host.recording
        own[host.name] = _diagnose(correlator.finish(), rec.counters, rec.stats,
                                   host.start.ports, rec.context)
    (write_json if json_out else write_text)(out, merged, diagnose_paths(merged), own)
    return 0


def run_report(recordings: list[tuple[str, BinaryIO]], out: TextIO) -> int:
    """`pktfate report`: each recording diagnosed as explain does, drawn into one
    HTML page (output/report.py)."""
    from .output.report import host_view, render

    def diagnose_recording(correlator: Correlator, rec, start: RecordedStart):
        flows = correlator.finish()
        return flows, _diagnose(flows, rec.counters, rec.stats, start.ports, rec.context)

    contents = [(name, stream.read()) for name, stream in recordings]  # read twice below
    views = [host_view(name, io.BytesIO(data), __version__, _replay_correlator,
                       diagnose_recording) for name, data in contents]
    across = None
    if len(contents) > 1:  # several hosts: their packets' paths, and who is responsible
        from .output.report import across_hosts
        from .paths.findings import diagnose_paths
        from .paths.merge import load, merge

        merged = merge(load(name, io.BytesIO(data), __version__) for name, data in contents)
        across = across_hosts(merged, diagnose_paths(merged))
        order = [h.name for h in merged.hosts]  # the hosts as the merge orders them
        views.sort(key=lambda view: order.index(view.name) if view.name in order else 0)
    out.write(render(views, __version__, across))
    return 0


def reasons_by_place() -> dict[str, list[str]]:
    """The kernel functions whose drops pktfate names without the kernel's reason,
    each with the reasons it can tell there (for `pktfate reasons`)."""
    from .diagnosis.tables import drop_locations

    return {func: [c.reason for c in candidates]
            for func, candidates in sorted(drop_locations().items())}
