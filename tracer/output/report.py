"""`pktfate report`: one self-contained HTML page from recordings of `watch --json`:
the diagnosis first, then per flow a ladder diagram of its packets (SVG), a
timeline of events per second by fate, and the host context that was read.

This module turns the typed records (the recording reader's, the correlator's, the
diagnosis's) into a view: lanes, arrows, bars, all numbers and words; the page's
markup, the SVG's included, is the Jinja2 template's (templates/report.html.j2).
Nothing is fetched to render it: no script, font or style from elsewhere."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

from ..correlate.correlator import Correlator, FlowKey, packet_key
from ..decode.events import PacketEvent
from ..decode.recording import RecordedStart, read_recording
from ..diagnosis.evidence import Finding
from ..diagnosis.wording import flow_label
from ..model.host import HostContext
from ..model.kinds import Hook
from ..paths.findings import PathFinding
from ..paths.merge import Merged
from .human import describe, fate_text

# Lanes of a ladder, left to right: the peer, then this host's hooks in the order
# an arriving packet meets them; what this host sends goes back leftwards.
LANES = ("peer", "tc egress", "XDP", "tc ingress", "stack", "socket")
_LANE_OF = {Hook.TC_EGRESS: 1, Hook.XDP: 2, Hook.TC_INGRESS: 3, Hook.KFREE_SKB: 4,
            Hook.TCP_BAD_CSUM: 4, Hook.TCP_SEND_RESET: 4, Hook.ICMP_SEND: 4}
LANE_GAP, LANE_LEFT, ROW, TOP = 100, 40, 30, 40
MAX_ROWS = 80  # arrows per flow; the rest are counted under the diagram
# Fates as the page colours them (the legend's order).
FATES = {"dropped": "#c62828", "answered by the kernel": "#ef6c00",
         "delivered": "#2e7d32", "sent": "#1565c0", "forwarded": "#757575"}


@dataclass
class Arrow:
    """One packet, or a run of identical ones, from where it entered to where its
    fate was decided."""

    label: str
    fate: str  # a key of FATES
    start: int  # lane indexes
    end: int
    seen: tuple[int, ...]  # lanes where it was seen
    why: str  # the fate's words (the last event's)
    count: int = 1
    y: int = 0

    @property
    def colour(self) -> str:
        return FATES[self.fate]

    def x(self, lane: int) -> int:
        return LANE_LEFT + lane * LANE_GAP


@dataclass
class Ladder:
    title: str
    arrows: list[Arrow]
    more: int  # packets past MAX_ROWS
    lanes: tuple[str, ...] = LANES

    @property
    def height(self) -> int:
        return TOP + ROW * len(self.arrows) + 20

    @property
    def width(self) -> int:
        return LANE_LEFT * 2 + LANE_GAP * (len(self.lanes) - 1)

    def lane_x(self, lane: int) -> int:
        return LANE_LEFT + lane * LANE_GAP


@dataclass
class Timeline:
    """Events per second of the recording, by fate: stacked bars."""

    seconds: int
    bars: list[list[tuple[str, int, int]]]  # per second: (colour, y, height)
    peak: int
    width: int = 640
    height: int = 160

    @property
    def bar_width(self) -> float:
        return self.width / max(self.seconds, 1)


@dataclass
class HostView:
    name: str
    start: RecordedStart
    findings: list[Finding]
    ladders: list[Ladder]
    timeline: Timeline
    context: HostContext
    counters: dict[str, int]
    events: int = 0
    warnings: list[str] = field(default_factory=list)


def _fate(ev: PacketEvent, inbound: bool, local: frozenset[str]) -> str:
    hook = ev.hook
    if hook is Hook.KFREE_SKB:
        return "dropped"
    if hook in (Hook.TCP_SEND_RESET, Hook.ICMP_SEND):
        return "answered by the kernel"
    if hook is Hook.TC_EGRESS:
        return "sent" if ev.src in local else "forwarded"
    return "delivered" if inbound else "sent"


class _Packet:
    """The events of one packet, in order."""

    __slots__ = ("events", "inbound")

    def __init__(self, ev: PacketEvent, inbound: bool):
        self.events = [ev]
        self.inbound = inbound

    def arrow(self, local: frozenset[str]) -> Arrow:
        first, last = self.events[0], self.events[-1]
        seen = tuple(sorted({_LANE_OF[e.hook] for e in self.events if e.hook in _LANE_OF}))
        fate = _fate(last, self.inbound, local)
        from_wire = any(e.hook in (Hook.XDP, Hook.TC_INGRESS) for e in self.events)
        if fate == "forwarded":  # in from the wire and out again: a router's
            start, end = (0, 1) if from_wire else (4, 1)
        elif self.inbound:
            start, end = 0, (5 if fate == "delivered" else max(seen, default=3))
        else:  # sent by this host: from its stack out to the peer, or dropped on the way
            start, end = (4, 0) if fate == "sent" else (5, min(seen, default=4))
        return Arrow(describe(first), fate, start, end, seen, fate_text(last))


def _ladder(title: str, packets: Iterable[_Packet], local: frozenset[str]) -> Ladder:
    arrows: list[Arrow] = []
    more = 0
    for packet in packets:
        arrow = packet.arrow(local)
        if arrows and (arrows[-1].label, arrows[-1].fate, arrows[-1].seen, arrows[-1].why) == (
                arrow.label, arrow.fate, arrow.seen, arrow.why):
            arrows[-1].count += 1  # a run of identical packets: one arrow, counted
            continue
        if len(arrows) >= MAX_ROWS:
            more += 1
            continue
        arrow.y = TOP + ROW * len(arrows) + ROW // 2
        arrows.append(arrow)
    return Ladder(title, arrows, more)


def _timeline(events_by_second: Counter[tuple[int, str]]) -> Timeline:
    if not events_by_second:
        return Timeline(1, [[]], 0)
    seconds = max(second for second, _ in events_by_second) + 1
    totals: Counter[int] = Counter()  # events per second, all fates: one pass
    for (second, _fate_name), n in events_by_second.items():
        totals[second] += n
    peak = max(totals.values())
    timeline = Timeline(seconds, [], peak)
    for second in range(seconds):
        y, stack = timeline.height, []
        for fate, colour in FATES.items():
            n = events_by_second.get((second, fate), 0)
            if n:
                h = max(1, round(n / peak * (timeline.height - 10)))
                y -= h
                stack.append((colour, y, h))
        timeline.bars.append(stack)
    return timeline


def host_view(name: str, stream: BinaryIO, version: str, make_correlator,
              diagnose_recording) -> HostView:
    """Read one recording: its events through the correlator explain uses
    (`make_correlator(start)`), grouped per flow and packet for the ladders,
    counted per second for the timeline; the flows and findings from
    `diagnose_recording(correlator, recording, start)`."""
    correlator: Correlator | None = None
    packets: dict[FlowKey, dict[object, _Packet]] = {}
    per_second: Counter[tuple[int, str]] = Counter()
    first_ts: list[float] = []
    local: frozenset[str] = frozenset()
    count = 0

    def on_event(start: RecordedStart, ev: PacketEvent) -> None:
        nonlocal correlator, local, count
        if correlator is None:
            correlator = make_correlator(start)
            local = frozenset(start.local_addrs)
            first_ts.append(ev.ts)
        correlator.feed(ev)
        count += 1
        if ev.hook is Hook.SOCK_STATE:
            return
        inbound = ev.dst in local
        per_second[(int(ev.ts - first_ts[0]), _fate(ev, inbound, local))] += 1
        flow = packets.setdefault(correlator.flow_key_of(ev), {})
        key = (packet_key(ev), inbound) if ev.hook is not Hook.ICMP_SEND else object()
        packet = flow.get(key)
        if packet is None:
            flow[key] = _Packet(ev, inbound)
        else:
            packet.events.append(ev)

    start, rec = read_recording(stream, version, on_event)
    if correlator is None:
        correlator = make_correlator(start)
    _flows, findings = diagnose_recording(correlator, rec, start)
    flows = correlator.flows

    def order(key: FlowKey) -> tuple[bool, int]:
        # The watched service's flows first (its local port watched), then the
        # busiest: as the diagnosis ranks them.
        return key[2] not in start.ports, -len(packets[key])

    ladders = [_ladder(flow_label(flows[key]) if key in flows else " ".join(map(str, key)),
                       packets[key].values(), local) for key in sorted(packets, key=order)]
    return HostView(name, start, findings, ladders, _timeline(per_second), rec.context,
                    dict(rec.counters), count)


@dataclass
class AcrossHosts:
    """Several recordings merged: the findings over the paths, and a ladder whose
    lanes are the hosts, one arrow per kind of path (its count beside it)."""

    findings: list[PathFinding]
    ladder: Ladder
    offsets: list[str]


def across_hosts(merged: Merged, findings: list[PathFinding]) -> AcrossHosts:
    names = tuple(h.name for h in merged.hosts)
    lane = {name: n for n, name in enumerate(names)}
    kinds: dict[tuple[str, tuple[str, ...], str, str], int] = {}
    for path in merged.paths:
        last = path.sightings[-1].event
        fate = "dropped" if last.hook is Hook.KFREE_SKB else (
            "delivered" if last.dst in merged.host(path.sightings[-1].host).local_addrs
            else "sent")
        key = (describe(path.first), tuple(path.hosts()), fate, fate_text(last))
        kinds[key] = kinds.get(key, 0) + 1
    arrows: list[Arrow] = []
    for (label, hosts, fate, why), count in list(kinds.items())[:MAX_ROWS]:
        arrow = Arrow(label, fate, lane[hosts[0]], lane[hosts[-1]],
                      tuple(sorted(lane[h] for h in hosts)), f"{hosts[-1]}: {why}", count)
        arrow.y = TOP + ROW * len(arrows) + ROW // 2
        arrows.append(arrow)
    offsets = [f"{o.host}: {o.offset * 1000:+.3f} ms (spread {o.spread * 1000:.3f} ms, "
               f"{o.matched} packets)" for o in merged.offsets]
    return AcrossHosts(findings, Ladder("packets across the hosts", arrows,
                                        max(0, len(kinds) - MAX_ROWS), names), offsets)


def render(hosts: list[HostView], version: str, across: AcrossHosts | None = None) -> str:
    """The page, from the package's template."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(loader=PackageLoader("pktfate.output", "templates"),
                      autoescape=select_autoescape(["html", "j2"]), undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html.j2").render(hosts=hosts, version=version, fates=FATES,
                                                     max_rows=MAX_ROWS, across=across)
