"""The diagnosis over paths: which host and hop is responsible, with the fix on
that host. Each rule reads the merged paths (merge.py) and names a host; rules
are data (RULES), tried in order, each path explained by the first that claims
it; findings with more packets come first within a rule's rank.

- checksum-not-completed: a segment reaches its destination with only the
  pseudo-header sum and is dropped there for its checksum, after a host on the way
  received it so and sent it on unchanged: that host's forwarding should have
  completed it.
- forged-reset: a RST in the name of a host whose own recording shows it never
  sent one (it never saw the request), first seen leaving another host: that host
  made it up.
- dropped-on-path: the packet's last sighting is a drop on a host that is not
  its destination (a router's firewall): that host and its rule.
- never-arrived: the packet left a host towards another host that recorded and
  never saw it, and no host between saw it either: lost on that link.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from ..decode.events import PacketEvent
from ..diagnosis.firewall import packet_rules
from ..diagnosis.origin import forged_sentence, hop_of, usual_hop
from ..diagnosis.wording import proto_label
from ..model.host import FirewallRule
from ..model.kinds import CsumVerdict, Hook
from ..model.protocols import TcpFlags, flags_text
from .merge import HostRecording, Merged, PacketPath, Sighting

CHECKSUM_REASONS = ("TCP_CSUM", "UDP_CSUM")
_ARRIVALS = (Hook.XDP, Hook.TC_INGRESS)


@dataclass
class PathFinding:
    cause: str
    host: str  # the host responsible
    summary: str
    evidence: list[str] = field(default_factory=list)
    fix: list[str] = field(default_factory=list)
    count: int = 0  # packets
    flows: set[str] = field(default_factory=set)


def _flow(ev: PacketEvent) -> str:
    return f"{proto_label(ev.proto)} {ev.src}:{ev.sport} > {ev.dst}:{ev.dport}" \
        if ev.sport is not None else f"{proto_label(ev.proto)} {ev.src} > {ev.dst}"


def _what(ev: PacketEvent) -> str:
    flags = f" [{flags_text(ev.tcp_flags)}]" if ev.tcp_flags is not None else ""
    port = f":{ev.dport}" if ev.dport is not None and not ev.proto.is_icmp else ""
    return f"{proto_label(ev.proto)}{flags} from {ev.src} to {ev.dst}{port}"


def _destination(merged: Merged, ev: PacketEvent) -> HostRecording | None:
    return next((h for h in merged.hosts if ev.dst in h.local_addrs), None)


def _owner(merged: Merged, addr: str) -> HostRecording | None:
    return next((h for h in merged.hosts if addr in h.local_addrs), None)


def _forwarded_on(path: PacketPath, host: str) -> bool:
    """Received from the wire and sent on by `host`."""
    hooks = [e.hook for e in path.at(host)]
    return any(h in _ARRIVALS for h in hooks) and Hook.TC_EGRESS in hooks


def _checksum_not_completed(_merged: Merged, path: PacketPath) -> PathFinding | None:
    last = path.sightings[-1]
    if last.event.hook is not Hook.KFREE_SKB or last.event.reason not in CHECKSUM_REASONS:
        return None
    order = path.hosts()
    arrived = [e for e in path.at(last.host) if e.hook in _ARRIVALS]
    if not arrived or arrived[0].checksum is not CsumVerdict.PSEUDO:
        return None
    upstream = [h for h in order[:order.index(last.host)] if _forwarded_on(path, h)
                and any(e.checksum is CsumVerdict.PSEUDO for e in path.at(h)
                        if e.hook in _ARRIVALS)]
    if not upstream:
        return None
    router = upstream[-1]
    ev = path.first
    ins = {e.iface for e in path.at(router) if e.hook in _ARRIVALS}
    outs = {e.iface for e in path.at(router) if e.hook is Hook.TC_EGRESS}
    own_drop = [e for e in path.at(router) if e.hook is Hook.KFREE_SKB]
    evidence = [f"{_what(ev)} arrived at {router} ({', '.join(sorted(map(str, ins)))}) with only "
                f"the pseudo-header sum in the checksum field, and left it "
                f"({', '.join(sorted(map(str, outs)))}) so",
                f"{last.host} received it so and dropped it in "
                f"{last.event.location.function if last.event.location else '?'} with reason "
                f"{last.event.reason}"]
    if own_drop:
        evidence.append(f"{router}'s own kernel dropped its copy ({own_drop[0].reason}): what "
                        "left it was sent by a program, not by the kernel's forwarding")
    return PathFinding(
        "checksum-not-completed", router,
        f"{router} forwards {proto_label(ev.proto)} segments to {ev.dst}"
        f"{':' + str(ev.dport) if ev.dport else ''} without completing their checksum; "
        f"{last.host} drops them ({last.event.reason}).",
        evidence,
        [f"on {router}: whatever forwards these packets must complete the checksum (or "
         "recompute it) before sending them on",
         f"or, on the sender {ev.src}: ethtool -K <iface> tx off, so that segments leave it "
         "with a full checksum"])


def _forged_reset(merged: Merged, path: PacketPath) -> PathFinding | None:
    ev = path.first
    if ev.tcp_flags is None or not ev.tcp_flags & TcpFlags.RST:
        return None
    owner = _owner(merged, ev.src)
    first = path.sightings[0].host
    if owner is None or owner.name == first or owner.name in path.hosts():
        return None
    request = [p for p in merged.paths if p.first.src == ev.dst and p.first.dst == ev.src
               and p.first.sport == ev.dport and p.first.dport == ev.sport]
    never = [f"the request it answers never reached {owner.name}: "
             f"{request[0].hosts()[-1]} was the last host that saw it"] \
        if request and owner.name not in request[0].hosts() else []
    own = f"{owner.name}'s own recording has no such RST: it never sent one"
    fix = "find the rule that rejects with tcp-reset for port {port} (iptables -S; nft " \
        "list ruleset) and remove or narrow it"
    if ev.hook is Hook.TC_EGRESS:  # seen leaving the host that made it up
        return PathFinding(
            "forged-reset", first,
            f"{first} answers TCP to {ev.src}:{ev.sport} with a RST in {owner.name}'s name; "
            f"{owner.name} never sent it.",
            [f"a RST in {owner.name}'s name ({ev.src}:{ev.sport}) first left {first} "
             f"({ev.iface}), TTL {ev.ttl}", own, *never],
            [f"on {first}: " + fix.format(port=ev.sport)])
    if ev.hook not in _ARRIVALS:
        return None
    # Made by a device nobody recorded: where, from its TTL where it arrived, against
    # the TTL of the owner's own packets there.
    owner_ttls = Counter(s.event.ttl for p in merged.paths for s in p.sightings
                         if s.host == first and s.event.src == ev.src
                         and s.event.hook in _ARRIVALS and p is not path
                         and not (s.event.tcp_flags or 0) & TcpFlags.RST)
    target_hop = usual_hop(owner_ttls)
    if target_hop is None or hop_of(ev.ttl) >= target_hop:
        return None
    device = f"the device at hop {hop_of(ev.ttl)} from {first}"
    return PathFinding(
        "forged-reset", device,
        f"{device} answers TCP to {ev.src}:{ev.sport} with a RST in {owner.name}'s name; "
        f"{owner.name} never sent it.",
        [forged_sentence("a RST", ev.src, ev.ttl, target_hop, "packets"), own, *never],
        [f"on {device}: " + fix.format(port=ev.sport)])


def _moved_rules(host: HostRecording) -> tuple[FirewallRule, ...]:
    return host.recording.context.firewall


def _ending(merged: Merged, path: PacketPath,
            hook: Hook) -> tuple[Sighting, HostRecording | None] | None:
    """The path's last sighting when it was at `hook`, and the packet's destination
    among the recorded hosts (None: not recorded)."""
    last = path.sightings[-1]
    if last.event.hook is not hook:
        return None
    return last, _destination(merged, last.event)


def _dropped_on_path(merged: Merged, path: PacketPath) -> PathFinding | None:
    ending = _ending(merged, path, Hook.KFREE_SKB)
    if ending is None:
        return None
    last, dest = ending
    ev = last.event
    if dest is not None and dest.name == last.host:
        return None  # dropped by its destination: that host's own diagnosis says why
    if min(e.ttl for e in path.at(last.host)) <= 1:
        return None  # its TTL ran out there: a traceroute's probe, or the ttl-expired finding
    host = merged.host(last.host)
    # The firewall's rules for the firewall's drops (a kernel without drop reasons
    # names none): the rules whose counters moved and whose match covers the packet.
    by_rule = ev.reason is None or str(ev.reason).startswith("NETFILTER")
    mine, unclear = packet_rules(_moved_rules(host), ev, host.recording.context.ipsets) \
        if by_rule else ([], [])
    rules = mine or unclear
    where = ev.location.function if ev.location else "?"
    evidence = [f"{_what(path.first)} reached {last.host} and was dropped there in {where} "
                f"with reason {ev.reason}"]
    if dest is not None:
        evidence.append(f"its destination, {dest.name}, never saw it")
    evidence += [f"rule whose counter moved on {last.host}: {r.rule} ({r.packets} packets)"
                 for r in rules]
    fix = [f"on {last.host}: remove or narrow that rule: "
           f"{r.rule.replace(' -A ', ' -D ', 1)}" for r in rules[:1]] or [
        f"on {last.host}: see why it drops them ({ev.reason} in {where})"]
    return PathFinding(
        "dropped-on-path", last.host,
        f"{last.host} drops {_what(path.first)} on the way"
        f"{' (' + str(ev.reason) + ')' if ev.reason else ''}.", evidence, fix)


def _never_arrived(merged: Merged, path: PacketPath) -> PathFinding | None:
    ending = _ending(merged, path, Hook.TC_EGRESS)
    if ending is None:
        return None
    last, dest = ending
    ev = last.event
    if dest is None or dest.name in path.hosts():
        return None
    return PathFinding(
        "never-arrived", last.host,
        f"{_what(path.first)} left {last.host} ({ev.iface}) and never reached {dest.name}.",
        [f"left {last.host} on {ev.iface}; {dest.name} recorded and never saw it, nor did any "
         "host between"],
        [f"check the link from {last.host} ({ev.iface}) to {dest.name}: a device between "
         "them that pktfate does not watch"])


Rule = Callable[[Merged, PacketPath], "PathFinding | None"]
RULES: tuple[tuple[str, Rule], ...] = (
    ("checksum-not-completed", _checksum_not_completed),
    ("forged-reset", _forged_reset),
    ("dropped-on-path", _dropped_on_path),
    ("never-arrived", _never_arrived),
)


def _forged_by_probe(merged: Merged) -> list[PathFinding]:
    """A probe's RST answered by the path in the target's name, where the target
    recorded and never sent one: the device the probe found (by its TTL, and the
    router that said 'time exceeded' at that hop) forged it."""
    found = []
    for probe in merged.probes:
        owner = _owner(merged, probe.target)
        if owner is None:
            continue
        for r in probe.results:
            if r.answer != "rst" or r.answered_by != "path" or r.answer_from != probe.target:
                continue
            sent = any(e.hook is Hook.TC_EGRESS and e.src == probe.target and e.sport == r.port
                       and e.tcp_flags is not None and e.tcp_flags & TcpFlags.RST
                       for e in owner.events)
            if sent:
                continue
            origin = _owner(merged, r.origin) if r.origin else None
            prober = _owner(merged, probe.source)
            device = origin.name if origin else (
                f"the device at hop {r.answer_hops} from {prober.name if prober else probe.source}"
                if r.answer_hops else (r.origin or "a device on the way"))
            found.append(PathFinding(
                "forged-reset", device,
                f"{device} answers TCP to {probe.target}:{r.port} with a RST in "
                f"{owner.name}'s name; {owner.name} never sent it.",
                [f"{probe.name}: {r.conclusion}",
                 f"{owner.name}'s own recording has no RST from port {r.port}: it never sent "
                 "one"],
                [f"on {device}: find the rule that rejects with tcp-reset for port {r.port} "
                 "(iptables -S; nft list ruleset) and remove or narrow it"],
                count=1, flows={f"TCP {probe.source} > {probe.target}:{r.port}"}))
    return found


def diagnose_paths(merged: Merged) -> list[PathFinding]:
    """The findings of RULES over every path, one per cause and host (counting its
    packets and flows), in RULES' order, then by packets."""
    found: dict[tuple[str, str, str], PathFinding] = {}
    rank = {name: n for n, (name, _) in enumerate(RULES)}
    counted: Counter[tuple[str, str, str]] = Counter()
    flows: defaultdict[tuple[str, str, str], set[str]] = defaultdict(set)
    for path in merged.paths:
        for _name, rule in RULES:
            finding = rule(merged, path)
            if finding is None:
                continue
            # One finding per cause, host and what it says (its summary names the
            # packets' kind and destination): a router's two rules stay two findings.
            key = (finding.cause, finding.host, finding.summary)
            found.setdefault(key, finding)
            counted[key] += 1
            flows[key].add(_flow(path.first))
            break
    for extra in _forged_by_probe(merged):
        key = (extra.cause, extra.host, extra.summary)
        if key in found:  # the paths said it too: the probe's sentence joins the evidence
            found[key].evidence += extra.evidence[:1]
        else:
            found[key] = extra
            counted[key], flows[key] = extra.count, extra.flows
    for key, finding in found.items():
        finding.count, finding.flows = counted[key], flows[key]
        finding.evidence.insert(0, f"{finding.count} packet{'s' * (finding.count != 1)}, "
                                   f"{len(finding.flows)} flow{'s' * (len(finding.flows) != 1)}")
    return sorted(found.values(), key=lambda f: (rank[f.cause], -f.count))
