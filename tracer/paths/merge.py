"""Several hosts' recordings made one: each packet's path across them.

Packets are matched by what survives forwarding and NAT, never by time alone:
the protocol, the IPv4 id, TCP's sequence and acknowledgment numbers and flags,
ICMP's type (and an echo's id and sequence), the length; addresses and ports only
for IPv6, which has no id. A copy a user-space forwarder sends on is the same
packet to the network, and is matched as such. Sightings of one key further apart
than MATCH_WINDOW (after the clocks are lined up) are different packets.

Each host's clock offset against the first host (hosts sorted by their identity:
the merge does not depend on the order the recordings are given in) is the median
of the differences between the first sightings of the packets both saw: the
one-way delays of the two directions cancel out; their spread is shown.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from ..decode.events import PacketEvent
from ..decode.recording import RecordedStart, Recording, read_recording
from ..errors import PktfateError
from ..model.kinds import Hook

MATCH_WINDOW = 5.0  # seconds: the same key further apart is another packet
# (proto, IPv4 id, seq, ack, flags, ICMP type, length, ports or None, addresses or None)
CrossKey = tuple[object, ...]


@dataclass
class HostRecording:
    """One host's recording, read: its events kept in order."""

    name: str  # what the merged story calls it (the recording's file name, or its host)
    start: RecordedStart
    recording: Recording
    events: list[PacketEvent] = field(default_factory=list)

    @property
    def identity(self) -> tuple[str, str, int, str]:
        host = self.start.host
        if host is None:
            return ("", "", self.start.netns or 0, self.name)
        return (host.hostname, host.machine_id or "", host.netns, self.name)

    @property
    def local_addrs(self) -> frozenset[str]:
        return frozenset(self.start.local_addrs)


@dataclass(frozen=True)
class ProbeAnswer:
    """One result of a `pktfate probe --json` recording, as the merge reads it."""

    proto: str
    port: int | None
    answer: str
    answer_from: str | None
    answer_ttl: int | None
    answer_hops: int | None
    answered_by: str
    origin: str | None
    conclusion: str


@dataclass
class ProbeRecording:
    """A `pktfate probe --json` output from one of the hosts (its last line)."""

    name: str
    source: str
    target: str
    results: list[ProbeAnswer]


@dataclass(frozen=True)
class ClockOffset:
    host: str
    offset: float  # seconds to subtract from this host's clock to read the reference's
    spread: float  # half the range of the differences it rests on
    matched: int  # packets it rests on (0: no packet in common, offset 0 assumed)


@dataclass(frozen=True)
class Sighting:
    host: str
    event: PacketEvent
    ts: float  # on the reference host's clock


@dataclass
class PacketPath:
    """One packet across the hosts that saw it, in the order they saw it."""

    key: CrossKey
    sightings: list[Sighting]

    @property
    def first(self) -> PacketEvent:
        return self.sightings[0].event

    def hosts(self) -> list[str]:
        """The hosts in the order the packet reached them."""
        seen: list[str] = []
        for s in self.sightings:
            if s.host not in seen:
                seen.append(s.host)
        return seen

    def at(self, host: str) -> list[PacketEvent]:
        return [s.event for s in self.sightings if s.host == host]


@dataclass
class Merged:
    hosts: list[HostRecording]
    offsets: list[ClockOffset]
    paths: list[PacketPath]
    probes: list[ProbeRecording] = field(default_factory=list)

    def host(self, name: str) -> HostRecording:
        return next(h for h in self.hosts if h.name == name)


def cross_key(ev: PacketEvent) -> CrossKey | None:
    """What identifies a packet on every host it crosses (None: an event of no
    packet, a socket's state)."""
    if ev.hook is Hook.SOCK_STATE:
        return None
    if ev.hook is Hook.ICMP_SEND:
        return None  # an error this host sends: its own packet, told by its quote
    v6 = ev.ip_id is None
    return (int(ev.proto), ev.ip_id, ev.seq, ev.ack, int(ev.tcp_flags or 0),
            ev.icmp_type if ev.proto.is_icmp else None, ev.length,
            (ev.sport, ev.dport) if v6 or ev.proto.is_icmp else None,
            (ev.src, ev.dst) if v6 else None)


def _first_seen(host: HostRecording) -> dict[CrossKey, float]:
    firsts: dict[CrossKey, float] = {}
    for ev in host.events:
        key = cross_key(ev)
        if key is not None and key not in firsts:
            firsts[key] = ev.ts
    return firsts


def clock_offsets(hosts: Sequence[HostRecording]) -> list[ClockOffset]:
    """Each host's offset against the first (see the module's docstring); a host
    with no packet in common with the first is lined up through one that has."""
    firsts = {h.name: _first_seen(h) for h in hosts}
    known: dict[str, ClockOffset] = {hosts[0].name: ClockOffset(hosts[0].name, 0.0, 0.0, 0)}
    pending = [h.name for h in hosts[1:]]
    while pending:
        progress = False
        for name in list(pending):
            for ref, ref_offset in list(known.items()):
                common = firsts[name].keys() & firsts[ref].keys()
                diffs = [firsts[name][k] - firsts[ref][k] for k in common]
                if not diffs:
                    continue
                middle = statistics.median(diffs)  # once: the outliers are told from it
                diffs = [d for d in diffs if abs(d - middle) < MATCH_WINDOW]
                if diffs:
                    known[name] = ClockOffset(
                        name, statistics.median(diffs) + ref_offset.offset,
                        (max(diffs) - min(diffs)) / 2, len(diffs))
                    pending.remove(name)
                    progress = True
                    break
        if not progress:
            for name in pending:
                known[name] = ClockOffset(name, 0.0, 0.0, 0)
            break
    return [known[h.name] for h in hosts]


def merge(recordings: Iterable[HostRecording | ProbeRecording]) -> Merged:
    """The recordings' packets as paths, on one clock; probes' results beside."""
    given = list(recordings)
    probes = sorted((r for r in given if isinstance(r, ProbeRecording)),
                    key=lambda p: (p.source, p.target, p.name))
    hosts = sorted((r for r in given if isinstance(r, HostRecording)), key=lambda h: h.identity)
    offsets = clock_offsets(hosts) if hosts else []
    by_host = {o.host: o.offset for o in offsets}
    sightings: dict[CrossKey, list[Sighting]] = defaultdict(list)
    for host in hosts:
        for ev in host.events:
            key = cross_key(ev)
            if key is not None:
                sightings[key].append(Sighting(host.name, ev, ev.ts - by_host[host.name]))
    paths: list[PacketPath] = []
    for key, seen in sightings.items():
        seen.sort(key=lambda s: s.ts)  # stable: one host's events keep their order
        current: list[Sighting] = []
        for s in seen:
            if current and s.ts - current[-1].ts > MATCH_WINDOW:
                paths.append(PacketPath(key, _in_path_order(current)))
                current = []
            current.append(s)
        paths.append(PacketPath(key, _in_path_order(current)))
    paths.sort(key=lambda p: p.sightings[0].ts)
    return Merged(hosts, offsets, paths, probes)


def _in_path_order(seen: list[Sighting]) -> list[Sighting]:
    """The hosts in the order the packet crossed them, each host's events in its
    own order. Clocks lined up to a median still differ by microseconds, less than
    a hop takes on one machine: the TTL orders the hosts first (each router takes
    one off), then the host that sent the packet comes before the one it reached,
    then the time."""
    by_host: dict[str, list[Sighting]] = {}
    for s in seen:
        by_host.setdefault(s.host, []).append(s)

    def order(host: str) -> tuple[int, int, float]:
        events = by_host[host]
        sent_here = events[0].event.hook is Hook.TC_EGRESS
        return (-max(s.event.ttl for s in events), 0 if sent_here else 1, events[0].ts)

    return [s for host in sorted(by_host, key=order) for s in by_host[host]]


def load(name: str, stream: BinaryIO, version: str,
         limit: int = 500_000) -> HostRecording | ProbeRecording:
    """One recording read whole into memory (a merge needs every host's events at
    once): `limit` events at most, the rest refused in one sentence. A `pktfate
    probe --json` output is read as a ProbeRecording."""
    if hasattr(stream, "peek"):  # a file, or standard input: looked at, not consumed
        head = stream.peek(64)[:64]
    else:
        head = stream.read(64)
        stream.seek(0)
    if head.lstrip().startswith(b'{"kind": "probe"'):
        return _probe_recording(name, stream)
    events: list[PacketEvent] = []

    def keep(_start: RecordedStart, ev: PacketEvent) -> None:
        if len(events) >= limit:
            raise PktfateError(f"{name}: more than {limit:,} events: merge shorter recordings")
        events.append(ev)

    start, recording = read_recording(stream, version, keep)
    return HostRecording(name, start, recording, events)


def _probe_recording(name: str, stream: BinaryIO) -> ProbeRecording:
    try:
        last = json.loads(stream.read().decode().strip().splitlines()[-1])
        results = [ProbeAnswer(r["proto"], r["port"], r["answer"], r["answer_from"],
                               r["answer_ttl"], r["answer_hops"], r["answered_by"],
                               r.get("origin"), r["conclusion"]) for r in last["results"]]
        return ProbeRecording(name, last["source"], last["target"], results)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise PktfateError(f"{name}: not a 'pktfate probe --json' output ({exc})") from None
