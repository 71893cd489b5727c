"""`pktfate probe`, the pure part: the probes, how answers pair with them, and
what the answers say about the path.

Every probe is recognisable in its answers: TCP and UDP probes by their own source
port, ICMP echo probes by their sequence number. A router's "time exceeded"
quotes the probe it answers, so it pairs the same way. The live part (raw
sockets, BPF) is probe/run.py; this module runs without root or kernel.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..decode.checksum import ones_sum, pseudo_header_sum
from ..decode.events import Decoded, PacketEvent
from ..diagnosis.origin import answered_by, forged_sentence, hop_of, ttl_story
from ..host.firewall import attribute
from ..model.kinds import ARRIVAL_HOOKS, Hook, TextEnum
from ..model.protocols import ICMP_BY_FAMILY, PROTO_NAMES, Proto, TcpFlags, proto_name

PROBE_PROTOCOLS = ("tcp", "udp", "icmp")
FULL_TTL = 64  # a probe sent as an ordinary packet: what answers at the end
FIRST_WINDOW = 2  # TTLs in the first round: a LAN target answers without extra probes
WINDOW = 4  # TTLs per later round
SILENT_GAP = 3  # hops in a row without an answer: the path is taken as ended
TRIES = 3  # sends of a silent TTL (or full probe) at most
# ICMP's and ICMPv6's types and codes: model/protocols.py, per family.
ICMP_TYPES = ICMP_BY_FAMILY


def family_of(addr: str) -> int:
    return ipaddress.ip_address(addr).version


@dataclass(frozen=True)
class ProbeConfig:
    target: str
    # (port, protocol): "53/udp" probes UDP only; a bare port, each of TCP and UDP
    # that `protos` has
    ports: tuple[tuple[int, str | None], ...] = ()
    protos: tuple[str, ...] = PROBE_PROTOCOLS
    max_hops: int = 30
    wait: float = 1.0  # seconds a round of probes waits for its answers
    json: bool = False

    def tracks(self) -> list[tuple[str, int | None]]:
        """(protocol, port) pairs to probe, in order: TCP and UDP per port, ICMP once."""
        out: list[tuple[str, int | None]] = []
        for proto in ("tcp", "udp"):
            out += [(proto, port) for port, only in self.ports
                    if (only or proto) == proto and (only or proto in self.protos)]
        out = list(dict.fromkeys(out))
        return out + ([("icmp", None)] if "icmp" in self.protos else [])

    @property
    def port_numbers(self) -> tuple[int, ...]:
        return tuple(dict.fromkeys(port for port, _ in self.ports))


# ---------------------------------------------------------------- packets


def _with_checksum(header: bytearray, offset: int, pseudo: int = 0) -> bytes:
    total = ones_sum(bytes(header)) + pseudo
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    struct.pack_into("!H", header, offset, ~total & 0xFFFF or 0xFFFF)
    return bytes(header)


def ipv4_header(src: str, dst: str, proto: int, ttl: int, ip_id: int, payload_len: int) -> bytes:
    """An IPv4 header for a raw IPPROTO_RAW socket; the kernel fills its checksum."""
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + payload_len, ip_id, 0x4000, ttl, proto, 0,
                       ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)


def ipv6_header(src: str, dst: str, next_header: int, hop_limit: int, flow_label: int,
                payload_len: int) -> bytes:
    """An IPv6 header for a raw IPPROTO_RAW socket (which sends it as it is)."""
    return struct.pack("!IHBB16s16s", (6 << 28) | (flow_label & 0xFFFFF), payload_len,
                       next_header, hop_limit, ipaddress.IPv6Address(src).packed,
                       ipaddress.IPv6Address(dst).packed)


def ip_header(src: str, dst: str, proto: int, ttl: int, ident: int, payload_len: int) -> bytes:
    """The IPv4 or IPv6 header in front of a probe; `ident` is IPv4's id or IPv6's
    flow label."""
    if family_of(dst) == 6:
        return ipv6_header(src, dst, proto, ttl, ident, payload_len)
    return ipv4_header(src, dst, proto, ttl, ident, payload_len)


def tcp_syn(src: str, dst: str, sport: int, dport: int, seq: int) -> bytes:
    # A plain SYN with an MSS option, as connect() sends it: middleboxes treat it
    # like a real connection attempt.
    header = bytearray(struct.pack("!HHIIBBHHH4s", sport, dport, seq, 0, 6 << 4, 0x02, 64240,
                                   0, 0, b"\x02\x04\x05\xb4"))
    return _with_checksum(header, 16, pseudo_header_sum(src, dst, 6, len(header)))


def udp_datagram(src: str, dst: str, sport: int, dport: int) -> bytes:
    payload = b"pktfate probe\n"
    header = bytearray(struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)
    return _with_checksum(header, 6, pseudo_header_sum(src, dst, 17, len(header)))


def icmp_echo(ident: int, seq: int, src: str = "", dst: str = "") -> bytes:
    """An echo request: ICMP's for an IPv4 `dst`, ICMPv6's (whose checksum covers
    the pseudo-header) for an IPv6 one."""
    icmp = ICMP_TYPES[family_of(dst) if dst else 4]
    header = bytearray(struct.pack("!BBHHH", icmp.echo_request, 0, 0, ident, seq) +
                       b"pktfate probe\n")
    pseudo = pseudo_header_sum(src, dst, icmp.proto, len(header)) \
        if icmp.proto is Proto.ICMPV6 else 0
    return _with_checksum(header, 2, pseudo)


# ---------------------------------------------------------------- probes and answers


class AnswerKind(TextEnum):
    """What came back for a probe (its name in the probe's JSON)."""

    SYN_ACK = "syn-ack"
    RST = "rst"
    ICMP_UNREACHABLE = "icmp-unreachable"
    ECHO_REPLY = "echo-reply"
    UDP_REPLY = "udp-reply"
    ICMP_ERROR = "icmp-error"
    TIME_EXCEEDED = "time-exceeded"  # from a router on the way, at the probe's TTL
    NONE = "none"  # nothing came back


# Answers that end the path: the target, or a device that refuses for it.
TERMINAL = frozenset(AnswerKind) - {AnswerKind.TIME_EXCEEDED, AnswerKind.NONE}
ANSWER_TEXT = {AnswerKind.SYN_ACK: "SYN-ACK", AnswerKind.RST: "RST",
               AnswerKind.ECHO_REPLY: "echo reply", AnswerKind.UDP_REPLY: "UDP reply",
               AnswerKind.TIME_EXCEEDED: "time exceeded", AnswerKind.NONE: "no answer"}


@dataclass
class Answer:
    kind: AnswerKind
    src: str
    ttl: int
    rtt_ms: float | None  # from leaving this host to the answer's arrival, both seen by BPF
    icmp_type: int | None = None
    icmp_code: int | None = None

    @property
    def hop(self) -> int:
        return hop_of(self.ttl)


def answer_text(kind: AnswerKind, icmp_type: int | None, icmp_code: int | None,
                v6: bool = False) -> str:
    """'SYN-ACK', 'ICMP port unreachable', 'time exceeded'..."""
    icmp = "ICMPv6" if v6 else "ICMP"
    if kind is AnswerKind.ICMP_UNREACHABLE:
        codes = ICMP_TYPES[6 if v6 else 4].unreachable_codes
        return f"{icmp} {codes.get(icmp_code or 0, f'unreachable code {icmp_code}')}"
    if kind is AnswerKind.ICMP_ERROR:
        return f"{icmp} error {icmp_type}/{icmp_code}"
    return ANSWER_TEXT[kind]


@dataclass
class Probe:
    proto: str
    port: int | None
    ttl: int
    ident: int  # TCP/UDP: source port; ICMP: echo sequence
    ip_id: int
    answer: Answer | None = None
    send_error: str | None = None  # what sendto said (EPERM: a local firewall)
    local_drop: str | None = None  # a drop of the probe on this host, as BPF saw it
    left_ts: float | None = None  # when BPF saw it leave (tc egress): RTTs in kernel time

    @property
    def key(self) -> tuple[str, int]:
        return (self.proto, self.ident)

    @property
    def full(self) -> bool:
        return self.ttl == FULL_TTL


def answer_key(ev: PacketEvent, target: str,
               echo_id: int) -> tuple[tuple[str, int], AnswerKind] | None:
    """The probe an arriving packet answers, as (key, kind), or None. ICMP and
    ICMPv6 probes are both keyed "icmp", the name `--proto` gives them."""
    icmp = ICMP_TYPES[ev.family]
    q = ev.quoted
    if q is not None and q.dst == target:
        echo = q.proto.is_icmp
        if echo and q.sport != echo_id:
            return None
        kind = AnswerKind.TIME_EXCEEDED if ev.icmp_type == icmp.time_exceeded else \
            AnswerKind.ICMP_UNREACHABLE if ev.icmp_type == icmp.unreachable else \
            AnswerKind.ICMP_ERROR
        ident = q.dport if echo else q.sport
        return (("icmp" if echo else proto_name(q.proto), ident), kind) \
            if ident is not None else None
    if ev.src != target:
        return None
    if ev.proto is Proto.TCP and ev.dport is not None:
        flags = ev.tcp_flags or 0
        reply = AnswerKind.RST if flags & TcpFlags.RST else \
            AnswerKind.SYN_ACK if flags & TcpFlags.SYN and flags & TcpFlags.ACK else None
        return (("tcp", ev.dport), reply) if reply else None
    if ev.proto is Proto.UDP and ev.dport is not None:
        return ("udp", ev.dport), AnswerKind.UDP_REPLY
    if ev.proto == icmp.proto and ev.icmp_type == icmp.echo_reply and ev.sport == echo_id \
            and ev.dport is not None:
        return ("icmp", ev.dport), AnswerKind.ECHO_REPLY
    return None


def probe_key(ev: PacketEvent, echo_id: int) -> tuple[str, int] | None:
    """The key of one of our own probes, as BPF saw it leaving or being dropped."""
    if ev.proto.has_ports and ev.sport is not None:
        return (proto_name(ev.proto), ev.sport)
    icmp = ICMP_TYPES[ev.family]
    if ev.proto == icmp.proto and ev.icmp_type == icmp.echo_request and ev.sport == echo_id \
            and ev.dport is not None:
        return ("icmp", ev.dport)
    return None


class Matcher:
    """Pairs what BPF saw with the probes sent."""

    def __init__(self, target: str, local: set[str], echo_id: int):
        self.target, self.local, self.echo_id = target, local, echo_id
        self.probes: dict[tuple[str, int], Probe] = {}
        self.unmatched = 0

    def add(self, probe: Probe) -> None:
        self.probes[probe.key] = probe

    def feed_batch(self, batch: Iterable[Decoded]) -> None:
        """feed() for each event of a drain (WatchSession's batches)."""
        for ev, _shape in batch:
            self.feed(ev)

    def feed(self, ev: PacketEvent) -> None:
        if ev.hook in ARRIVAL_HOOKS and ev.dst in self.local:
            self._arrival(ev)
        elif ev.src in self.local and ev.dst == self.target:
            probe = self.probes.get(probe_key(ev, self.echo_id) or ("", -1))
            if probe is None:
                return
            if ev.hook is Hook.TC_EGRESS and probe.left_ts is None:
                probe.left_ts = ev.ts
            elif ev.hook is Hook.KFREE_SKB:
                probe.local_drop = ev.reason or "UNKNOWN"

    def _arrival(self, ev: PacketEvent) -> None:
        found = answer_key(ev, self.target, self.echo_id)
        probe = self.probes.get(found[0]) if found else None
        if probe is None or found is None:
            self.unmatched += found is not None
            return
        if probe.answer is None:  # the first answer counts (a retransmitted SYN-ACK does not)
            rtt = round((ev.ts - probe.left_ts) * 1000, 3) if probe.left_ts else None
            icmp = ev.proto.is_icmp
            probe.answer = Answer(found[1], ev.src, ev.ttl, rtt,
                                  ev.icmp_type if icmp else None, ev.icmp_code if icmp else None)


# ---------------------------------------------------------------- tracks


@dataclass
class Track:
    """The probes of one protocol and port: TTL-limited ones, then full ones."""

    proto: str
    port: int | None
    probes: list[Probe] = field(default_factory=list)
    next_ttl: int = 1
    traced: bool = False  # the TTL-limited series is over

    def final(self) -> Probe | None:
        """The probe whose answer ends the path: a full probe's first, else the
        lowest TTL that drew something other than 'time exceeded'."""
        ended = [p for p in self.probes if p.answer and p.answer.kind in TERMINAL]
        full = [p for p in ended if p.full]
        if full:
            return full[0]
        return min(ended, key=lambda p: p.ttl) if ended else None

    def hops(self) -> dict[int, Probe]:
        """TTL -> the TTL-limited probe sent with it (the first answered, if sent again)."""
        out: dict[int, Probe] = {}
        for probe in self.probes:
            if not probe.full and (probe.ttl not in out or
                                   (probe.answer and not out[probe.ttl].answer)):
                out[probe.ttl] = probe
        return out

    def last_hop(self) -> Probe | None:
        answered = [p for p in self.hops().values() if p.answer]
        return max(answered, key=lambda p: p.ttl) if answered else None

    def plan_round(self, max_hops: int, answered_elsewhere: set[int]) -> list[int]:
        """The TTLs to send next. A window of TTL-limited probes (a full one beside the
        first) until the end of the path is reached or SILENT_GAP hops in a row stay
        silent; then again, up to TRIES times in all, full probes while none is
        answered and TTLs that stayed silent here but answered for another protocol
        or port (routers limit their ICMP errors: 6 at once, then 1 a second)."""
        ttls: list[int] = []
        if self.blocked_here:
            return ttls  # this host drops them: sending more changes nothing
        if not self.traced and self._path_over(max_hops):
            self.traced = True
        if not self.traced:
            window = WINDOW if self.next_ttl > 1 else FIRST_WINDOW
            ttls = list(range(self.next_ttl, min(self.next_ttl + window, max_hops + 1)))
            self.next_ttl += len(ttls)
        else:
            hops = self.hops()
            ttls = [ttl for ttl in sorted(answered_elsewhere)
                    if ttl in hops and not hops[ttl].answer and self._tries(ttl) < TRIES]
        full_answered = any(p.full and p.answer for p in self.probes)
        if not full_answered and self._tries(FULL_TTL) < TRIES and \
                (self.traced or not self._tries(FULL_TTL)):
            ttls.append(FULL_TTL)
        return ttls

    def _tries(self, ttl: int) -> int:
        return sum(1 for p in self.probes if p.ttl == ttl)

    def router_hops(self) -> set[int]:
        """TTLs a router answered with 'time exceeded'."""
        return {ttl for ttl, p in self.hops().items()
                if p.answer and p.answer.kind is AnswerKind.TIME_EXCEEDED}

    def _path_over(self, max_hops: int) -> bool:
        if self.next_ttl > max_hops or any(p.answer and p.answer.kind in TERMINAL and not p.full
                                           for p in self.probes):
            return True
        hops = self.hops()
        silent = 0
        for ttl in range(self.next_ttl - 1, 0, -1):
            if hops.get(ttl) and hops[ttl].answer:
                break
            silent += 1
        return silent >= SILENT_GAP

    @property
    def blocked_here(self) -> bool:
        return bool(self.probes) and all(p.send_error or p.local_drop for p in self.probes)


# ---------------------------------------------------------------- results


def target_hop(tracks: list[Track], target: str) -> tuple[int | None, str]:
    """The target's own hop: from its echo replies, else its SYN-ACKs or UDP replies
    (answers a firewall on the way rarely forges). Returns (hop, what it came from)."""
    for kinds, what in (((AnswerKind.ECHO_REPLY,), "echo replies"),
                        ((AnswerKind.SYN_ACK, AnswerKind.UDP_REPLY), "SYN-ACKs and replies")):
        hops: Counter[int] = Counter(p.answer.hop for t in tracks for p in t.probes
                                if p.answer and p.answer.kind in kinds
                                and p.answer.src == target)
        if hops:
            return hops.most_common(1)[0][0], what
    return None, ""


def track_packets(track: Track, source: str, target: str, oif: str | None) -> list[dict]:
    """The probes of a track as firewall.covers() reads packets."""
    v6 = family_of(target) == 6
    proto = proto_name(ICMP_TYPES[6 if v6 else 4].proto) if track.proto == "icmp" \
        else track.proto
    base = {"family": 6 if v6 else 4, "direction": "out", "proto": proto, "src": source,
            "dst": target, "dport": track.port, "oif": oif}
    if track.proto == "icmp":
        return [base]
    return [{**base, "sport": port} for port in sorted({p.ident for p in track.probes})] \
        or [base]


@dataclass(frozen=True)
class HopResult:
    """One TTL of a track: who answered it, and how."""

    hop: int
    from_addr: str | None = field(metadata={"json": "from"})
    answer: AnswerKind | None
    ttl: int | None
    rtt_ms: float | None
    icmp_code: int | None


@dataclass(frozen=True)
class Blocked:
    """Probes that never left this host: what sending said, what the kernel's drop
    said, and the OUTPUT rules whose counters moved (covering them, or perhaps)."""

    error: str | None
    drop_reason: str | None
    rules: tuple[str, ...]
    rules_unclear: tuple[str, ...]


@dataclass
class ProbeResult:
    """One protocol and port of a probe: the README's `results` entry, field by field."""

    proto: str  # as --proto names it: tcp, udp, icmp (ICMPv6 for an IPv6 target)
    port: int | None
    answer: AnswerKind
    answer_from: str | None
    answer_ttl: int | None
    answer_initial_ttl: int | None
    answer_hops: int | None
    icmp_type: int | None
    icmp_code: int | None
    target_hops: int | None
    answered_by: str  # "target", "path" or "unknown" (diagnosis.origin.answered_by)
    last_hop: int | None
    last_hop_from: str | None
    origin: str | None
    hops: tuple[HopResult, ...]
    probes: int
    blocked_here: Blocked | None
    conclusion: str = ""


def result(track: Track, target: str, target_hops: int | None,
           local_rules: list[dict[str, Any]], source: str = "",
           oif: str | None = None) -> ProbeResult:
    """One protocol and port: the JSON contract's fields and the conclusion."""
    final = track.final()
    answer = final.answer if final else None
    last = track.last_hop()
    hop_list = tuple(HopResult(ttl, p.answer.src if p.answer else None,
                               p.answer.kind if p.answer else None,
                               p.answer.ttl if p.answer else None,
                               p.answer.rtt_ms if p.answer else None,
                               p.answer.icmp_code if p.answer else None)
                     for ttl, p in sorted(track.hops().items()))
    by = answered_by(answer.src if answer else None, answer.hop if answer else None, target,
                     target_hops)
    return ProbeResult(
        proto=track.proto, port=track.port,
        answer=answer.kind if answer else AnswerKind.NONE,
        answer_from=answer.src if answer else None,
        answer_ttl=answer.ttl if answer else None,
        answer_initial_ttl=answer.ttl + answer.hop - 1 if answer else None,
        answer_hops=answer.hop if answer else None,
        icmp_type=answer.icmp_type if answer else None,
        icmp_code=answer.icmp_code if answer else None,
        target_hops=target_hops, answered_by=by,
        last_hop=last.ttl if last else None,
        last_hop_from=last.answer.src if last and last.answer else None,
        origin=_origin_device(track, answer, target) if answer and by == "path" else None,
        hops=hop_list, probes=len(track.probes),
        blocked_here=_blocked(track, local_rules, source, target, oif))


def _blocked(track: Track, local_rules: list[dict[str, Any]], source: str, target: str,
             oif: str | None) -> Blocked | None:
    if not track.blocked_here:
        return None
    errors = Counter(p.send_error for p in track.probes if p.send_error)
    drops = Counter(p.local_drop for p in track.probes if p.local_drop)
    # Only the rules whose own match covers this track's probes: another
    # protocol's rule moving in the same run is not this one's cause.
    mine, unclear = attribute(local_rules, track_packets(track, source, target, oif),
                              lambda rule: str(rule["rule"]))
    return Blocked(errors.most_common(1)[0][0] if errors else None,
                   drops.most_common(1)[0][0] if drops else None,
                   tuple(r["rule"] for r in mine), tuple(r["rule"] for r in unclear))


def conclude(results: list[ProbeResult], target: str, reference: str) -> None:
    """Give each result its conclusion, with what the other results add: a port that
    gets no answer while another of the same protocol reaches the target is filtered
    for that port alone."""
    v6 = family_of(target) == 6
    for r in results:
        r.conclusion = conclusion(r, target, reference)
        if r.answer is not AnswerKind.NONE or r.blocked_here:
            continue
        through = [o for o in results if o.answered_by == "target"]
        same = [o for o in through if o.proto == r.proto]
        if same:
            r.conclusion += (f"; {service_name(same[0], v6)} gets through to {target}, so "
                             f"{service_name(r, v6)} alone is filtered")
        elif through:
            r.conclusion += "; " + ", ".join(service_name(o, v6) for o in through) + \
                f" {'gets' if len(through) == 1 else 'get'} through to {target}"


def _origin_device(track: Track, answer: Answer, target: str) -> str | None:
    """Who sent an answer from the path: the address it names if that is not the
    target's, else the device that answered 'time exceeded' at the answer's hop."""
    if answer.src != target:
        return answer.src
    probe = track.hops().get(answer.hop)
    if probe and probe.answer and probe.answer.kind is AnswerKind.TIME_EXCEEDED:
        return probe.answer.src
    return None


def rules_clause(rules: list[str], unclear: list[str]) -> str:
    """'; the rule: ...', or what can be said when no rule's match is known to cover
    the packets."""
    if rules:
        return f"; the rule{'s' if len(rules) > 1 else ''}: " + "; ".join(rules)
    if unclear:
        return ("; a rule whose counter moved, though pktfate cannot tell from its match "
                "whether it is this one: " + "; ".join(unclear))
    return ""


def service_name(r: ProbeResult, v6: bool = False) -> str:
    """'TCP :22', 'UDP :53', 'ICMP' (ICMPv6 for an IPv6 target)."""
    name = "ICMPv6" if v6 and r.proto == "icmp" else r.proto.upper()
    return f"{name} :{r.port}" if r.port else name


# What an answer from the target itself says of the port.
PORT_STATES = {AnswerKind.SYN_ACK: "open", AnswerKind.RST: "closed (the host itself resets)",
               AnswerKind.ECHO_REPLY: "reachable", AnswerKind.UDP_REPLY: "open",
               AnswerKind.ICMP_UNREACHABLE: "closed (the host itself answers unreachable)"}


def conclusion(r: ProbeResult, target: str, reference: str) -> str:
    """What an operator would write in the incident channel about this result."""
    v6 = family_of(target) == 6
    what = service_name(r, v6)
    if r.blocked_here:
        b = r.blocked_here
        how = " and ".join(part for part in (
            f"sending fails with '{b.error}'" if b.error else "",
            f"the kernel drops them ({b.drop_reason})" if b.drop_reason else "") if part)
        return f"{what} probes never leave this host: {how}, a local firewall (OUTPUT)" + \
            rules_clause(list(b.rules), list(b.rules_unclear))
    last = f"hop {r.last_hop} ({r.last_hop_from})" if r.last_hop else None
    if r.answer is AnswerKind.NONE or r.answer_ttl is None:
        if not last or r.last_hop is None:
            return f"{what}: no answer at all, not even from the first hop"
        where = (f"{target} is hop {r.target_hops}, right after it: the probes are dropped "
                 f"by {r.last_hop_from} on the way or by {target} itself (run pktfate watch "
                 f"on {target} to tell)") if r.target_hops == r.last_hop + 1 else \
            f"they are dropped after {last}"
        return f"{what}: no answer; the probes get as far as {last} and no farther: {where}"
    said = f"{_answer_text(r, v6)} from {r.answer_from}"
    if r.answered_by == "target":
        return f"{what} reaches {target} (hop {r.answer_hops}): " \
            f"{PORT_STATES.get(r.answer, said)}"
    if r.answered_by == "path" and r.answer_from == target and r.target_hops is not None:
        return forged_sentence(f"The {_answer_text(r, v6)} for {what}", target, r.answer_ttl,
                               r.target_hops, reference, r.origin) + \
            f". {target} itself may never see these probes"
    if r.answered_by == "path":
        return (f"{what} is refused on the way: {said} ({ttl_story(r.answer_ttl, v6)}), "
                f"a device on the path, not {target}")
    return (f"{what}: {said} ({ttl_story(r.answer_ttl, v6)}); {target}'s own distance is "
            "unknown (no echo replies or SYN-ACKs), so its origin cannot be told")


def _answer_text(r: ProbeResult, v6: bool = False) -> str:
    return answer_text(r.answer, r.icmp_type, r.icmp_code, v6)


def proto_number(name: str) -> int:
    return next(int(p) for p, text in PROTO_NAMES.items() if text == name)
