"""Formatters: the live event lines, the flow summary and the diagnosis, as text
for a terminal (under 100 columns) or as JSON lines. Each writes to the stream
it is given."""

from __future__ import annotations

import io
import textwrap
import time
from collections.abc import Iterable
from typing import TextIO

from ..correlate.correlator import UNKNOWN_REASON, Flow
from ..decode.events import Decoded, PacketEvent, WatchStats
from ..diagnosis.evidence import Finding
from ..diagnosis.wording import flow_label, proto_label
from ..model.kinds import (
    INTERFACE_HOOKS,
    CsumVerdict,
    Hook,
    hook_name,
    state_text,
    verdict_name,
)
from ..model.protocols import ICMP_FAMILIES, Proto, TcpFlags, flags_text

WIDTH = 99
MAX_LINES_PER_SECOND = 40  # live lines; beyond that they are counted, not printed


def _endpoint(addr: str, port: int | None) -> str:
    if port is None:
        return addr
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def describe(ev: PacketEvent) -> str:
    """'TCP 10.0.1.2:40312 > 10.0.2.2:80 [S]' and the like."""
    family = ICMP_FAMILIES.get(ev.proto)
    if family is not None:
        # Each family's own names: ICMPv6's type 3 is time exceeded, not unreachable.
        what = family.type_name(ev.icmp_type)
        if ev.hook is Hook.ICMP_SEND:
            what = "?"
        return f"ICMP {ev.src} > {ev.dst} {what}"
    text = f"{proto_label(ev.proto)} {_endpoint(ev.src, ev.sport)} > " \
        f"{_endpoint(ev.dst, ev.dport)}"
    if ev.tcp_flags is not None:
        text += f" [{flags_text(ev.tcp_flags)}]"
    return text


def noteworthy(ev: PacketEvent, first: bool) -> bool:
    """Arrivals of connection starts and ends, every fate, every answer; not each
    segment of a healthy transfer."""
    if ev.hook not in INTERFACE_HOOKS:  # a fate, an answer, a state change
        return True
    if not first:
        return False
    return ev.proto is not Proto.TCP or bool(
        (ev.tcp_flags or 0) & (TcpFlags.SYN | TcpFlags.RST | TcpFlags.FIN))


def event_line(ev: PacketEvent) -> str:
    clock = time.strftime("%H:%M:%S", time.localtime(ev.ts)) + f".{int(ev.ts * 1000) % 1000:03d}"
    packet = describe(ev) if ev.hook is not Hook.SOCK_STATE else \
        f"TCP {_endpoint(ev.src, ev.sport)} - {_endpoint(ev.dst, ev.dport)}"
    line = f"{clock} {packet}  {fate_text(ev)}"
    return line[:WIDTH]


_ON_THE_WIRE = {Hook.XDP: "arrived xdp", Hook.TC_INGRESS: "arrived tc", Hook.TC_EGRESS: "sent tc"}
_WORTH_SAYING = (CsumVerdict.BAD, CsumVerdict.PSEUDO)


def _reason_text(reason: str | None) -> str:
    """A drop reason as the kernel named it, or what it means that it named none
    (kernels before 5.17 give the tracepoint no reason: the diagnosis tells it
    from the place)."""
    return "without a reason" if reason in (None, UNKNOWN_REASON) else str(reason)


def fate_text(ev: PacketEvent) -> str:
    """What happened to the packet at this hook, in words."""
    hook = ev.hook
    if hook in _ON_THE_WIRE:
        # "tc": "arrived" or "sent" already says which way (the JSON names the hook).
        tail = f"{_ON_THE_WIRE[hook]} {ev.iface or ''} ttl {ev.ttl}"
        if ev.checksum in _WORTH_SAYING:
            tail += f" csum {verdict_name(ev.checksum)}"
        return tail
    if hook is Hook.KFREE_SKB:
        where = ev.location.function if ev.location else "an unknown place"
        return f"DROPPED {_reason_text(ev.reason)} at {where}"
    if hook is Hook.TCP_SEND_RESET:
        return "answered by the kernel with RST"
    if hook is Hook.ICMP_SEND:
        return f"answered by the kernel with ICMP {ev.icmp_type}/{ev.icmp_code}"
    if hook is Hook.TCP_BAD_CSUM:
        return "bad TCP checksum"
    if ev.state is not None:
        return f"state {state_text(ev.state)}"
    return f"seen at hook {int(hook)}"


def partial_events_lines(stats: WatchStats) -> list[str]:
    """What the flows above miss when events were sampled or lost, and the kernel's
    exact counts of what matters then: drops per reason and arrivals."""
    lost = sum(stats.lost.values())
    sampled = sum(stats.sampled.values())
    if not lost and not sampled:
        return []
    lines = [f"  (events: {sampled} sampled out, {lost} lost in the ring buffer; per flow "
             "above, counts are of the events received)"]
    totals: dict[str, int] = {}
    for count in stats.kernel_counts:
        if count.hook is Hook.KFREE_SKB:
            what = f"{proto_label(count.proto)} dropped {count.reason}"
        elif count.hook.is_arrival:
            what = f"{proto_label(count.proto)} arrived at {hook_name(count.hook)}"
        else:
            continue
        totals[what] = totals.get(what, 0) + count.count
    if totals:
        lines.append("  kernel's exact counts: " + ", ".join(
            f"{what} {n}" for what, n in sorted(totals.items(), key=lambda kv: -kv[1])[:6]))
    if stats.agg_full:
        lines.append(f"  ({stats.agg_full} events found the kernel's count table full)")
    return lines


def banner(start: dict) -> list[str]:
    """The lines a watch starts with, from its start record."""
    what = " ".join(f":{p}" for p in start["ports"]) or "all ports"
    hosts = f" hosts {', '.join(start['hosts'])}" if start["hosts"] else ""
    lines = [f"pktfate {start['version']}: watching {'/'.join(start['protos'])} {what}{hosts}"
             f" (+ICMP), netns {'all' if start['all_netns'] else start['netns']}"]
    xdp = ", ".join(f"{i} ({m})" for i, m in start["xdp"].items()) or "none"
    lines.append(f"  XDP on {xdp}; tc on {', '.join(start['tc']) or 'none'}")
    if start.get("xdp_left_out"):
        lines.append(f"  generic XDP left out on {', '.join(start['xdp_left_out'])}: "
                     "tc ingress sees the same packets")
    for item in start["missing"]:  # sentences of their own: wrapped to the width
        lines += textwrap.wrap(f"missing: {item}", WIDTH, initial_indent="  ",
                               subsequent_indent="    ", break_on_hyphens=False)
    lines += [f"  warning: run {pid} ended without detaching: run 'pktfate cleanup'"
              for pid in start["leftovers"]]
    lines.append("  Ctrl-C to stop and see the diagnosis" if not start["duration"] else
                 f"  for {start['duration']:g}s, then the diagnosis")
    return lines


def diagnosis_text(findings: Iterable[Finding]) -> str:
    """The report's DIAGNOSIS part alone, as the terminal shows it."""
    buffer = io.StringIO()
    out = HumanOutput(buffer)
    for n, finding in enumerate(findings, 1):
        out._finding(n, finding)
    return "DIAGNOSIS\n" + buffer.getvalue()


class HumanOutput:
    def __init__(self, stream: TextIO, show_all: bool = False):
        self.stream = stream
        self.show_all = show_all
        self._second = 0
        self._in_second = 0
        self.suppressed = 0

    def start(self, record: dict) -> None:
        for line in banner(record):
            self._write(line)

    def events(self, batch: Iterable[Decoded],
               firsts: Iterable[bool]) -> None:
        """The lines of a batch of events; `firsts`: whether each was its packet's
        first sighting (Correlator.feed_batch)."""
        for (ev, _shape), first in zip(batch, firsts):
            self.event(ev, first)

    def event(self, ev: PacketEvent, first: bool) -> None:
        if not self.show_all and not noteworthy(ev, first):
            return
        second = int(ev.ts)
        if second != self._second:
            self._second, self._in_second = second, 0
        self._in_second += 1
        if self._in_second > MAX_LINES_PER_SECOND:
            self.suppressed += 1
            return
        self._write(event_line(ev))

    def finish(self, flows: list[Flow], findings: list[Finding], stats: WatchStats,
               _counters: dict[str, int], _context: dict) -> None:
        if self.suppressed:
            self._write(f"({self.suppressed} more event lines not shown: over "
                        f"{MAX_LINES_PER_SECOND}/s)")
        self._write("")
        self._write("FLOWS")
        if not flows:
            self._write("  none seen")
        for flow in flows[:20]:
            self._flow(flow)
        if len(flows) > 20:
            self._write(f"  ... and {len(flows) - 20} more flows")
        for line in partial_events_lines(stats):
            self._wrapped(line.strip(), "    ", first="  ")
        self._write("")
        self._write("DIAGNOSIS")
        for n, finding in enumerate(findings, 1):
            self._finding(n, finding)

    def _flow(self, flow: Flow) -> None:
        self._write(f"  #{flow.id} {flow_label(flow)}")
        parts = [f"in {flow.packets_in}", f"out {flow.packets_out}"]
        if flow.syn_in:
            parts.append(f"SYN in {flow.syn_in}")
        if flow.synack_out:
            parts.append(f"SYN-ACK out {flow.synack_out}")
        if flow.echo_requests_in:
            parts.append(f"echo in {flow.echo_requests_in}, replies {flow.echo_replies_out}")
        if flow.established:
            parts.append(f"established {flow.established}")
        fates = ", ".join(f"{k} {v}" for k, v in flow.fates.items() if v)
        if fates:
            parts.append(f"fates: {fates}")
        drops = ", ".join(f"{v} {_reason_text(k)}" if k == UNKNOWN_REASON else f"{k} {v}"
                          for k, v in flow.drops.items())
        if drops:
            parts.append(f"drops: {drops}")
        self._wrapped("; ".join(parts), "     ")

    def _finding(self, n: int, finding: Finding) -> None:
        self._wrapped(f"{n}. [{finding.cause}] {finding.summary}", "   ", first="")
        for line in finding.evidence:
            self._wrapped(line, "       ", first="   - ")
        for line in finding.fix:
            self._wrapped(line, "       ", first="   fix: ")

    def _wrapped(self, text: str, indent: str, first: str | None = None) -> None:
        lead = indent if first is None else first
        for line in textwrap.wrap(text, WIDTH, initial_indent=lead, subsequent_indent=indent,
                                  break_on_hyphens=False, break_long_words=True):
            self._write(line)

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def flush(self) -> None:
        self.stream.flush()
