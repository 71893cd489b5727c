"""The merged story of several hosts' recordings (`pktfate explain A B C`): the
hosts and their clocks, each flow's packets along their path, the diagnosis over
the paths, then each host's own top finding. Text under 100 columns, or one JSON
object (README: "Several hosts")."""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from typing import TextIO

from ..diagnosis.evidence import Finding
from ..model.kinds import Hook, hook_name
from ..paths.findings import PathFinding
from ..paths.merge import Merged, PacketPath, Sighting
from .human import WIDTH, describe, fate_text

MAX_PATH_LINES = 12  # kinds of path shown per story; the rest counted


def _step(s: Sighting) -> str:
    ev = s.event
    if ev.hook in (Hook.KFREE_SKB, Hook.XDP, Hook.TC_INGRESS, Hook.TC_EGRESS):
        return f"{s.host}: {fate_text(ev)}"
    return f"{s.host}: {hook_name(ev.hook)}"


def _tuple(s: Sighting) -> tuple[object, ...]:
    ev = s.event
    return ev.src, ev.sport, ev.dst, ev.dport


def path_steps(path: PacketPath) -> list[str]:
    """Each sighting in words; where the addresses or ports differ from the sighting
    before (a NAT on the way), what they are now."""
    steps = []
    for before, s in zip([None, *path.sightings], path.sightings):
        step = _step(s)
        if before is not None and _tuple(before) != _tuple(s):
            ev = s.event
            ports = ev.sport is not None and not ev.proto.is_icmp
            step += (f" (now {ev.src}:{ev.sport} > {ev.dst}:{ev.dport})" if ports
                     else f" (now {ev.src} > {ev.dst})")
        steps.append(step)
    return steps


def _kinds(merged: Merged) -> Counter[tuple[str, tuple[str, ...]]]:
    """Paths grouped by what the packet was and the steps it took."""
    kinds: Counter[tuple[str, tuple[str, ...]]] = Counter()
    for path in merged.paths:
        kinds[(describe(path.first), tuple(path_steps(path)))] += 1
    return kinds


def _wrap(text: str, first: str, rest: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=first, subsequent_indent=rest,
                         break_on_hyphens=False)


def write_text(out: TextIO, merged: Merged, findings: list[PathFinding],
               own: dict[str, list[Finding]]) -> None:
    lines = ["HOSTS"]
    for host, offset in zip(merged.hosts, merged.offsets):
        ident = host.start.host
        where = f"{ident.hostname}, netns {ident.netns}" if ident else \
            f"netns {host.start.netns or '?'}"
        clock = "the reference clock" if offset is merged.offsets[0] else (
            f"clock {offset.offset * 1000:+.3f} ms (spread {offset.spread * 1000:.3f} ms, "
            f"{offset.matched} packets)" if offset.matched else "no packet in common: clock "
            "not lined up")
        lines += _wrap(f"{host.name} ({where}; {', '.join(host.start.local_addrs[:3])}): "
                       f"{len(host.events)} events; {clock}", "  ", "      ")
    for probe in merged.probes:
        lines += _wrap(f"{probe.name}: pktfate probe from {probe.source} to {probe.target}, "
                       f"{len(probe.results)} results", "  ", "      ")
    lines += ["", "PATHS"]
    kinds = _kinds(merged)
    for (what, steps), count in kinds.most_common(MAX_PATH_LINES):
        lines += _wrap(f"{what}{f' x{count}' if count > 1 else ''}", "  ", "      ")
        lines += _wrap(" > ".join(steps), "      ", "      ")
    if len(kinds) > MAX_PATH_LINES:
        lines.append(f"  ... and {len(kinds) - MAX_PATH_LINES} more kinds of path")
    lines += ["", "DIAGNOSIS ACROSS HOSTS"]
    if not findings:
        lines.append("  nothing on the way: every packet ended where it was going "
                     "(each host's own findings below)")
    for n, f in enumerate(findings, 1):
        lines += _wrap(f"{n}. [{f.cause}] on {f.host}: {f.summary}", "", "   ")
        for e in f.evidence:
            lines += _wrap(e, "   - ", "       ")
        for fix in f.fix:
            lines += _wrap(fix, "   fix: ", "       ")
    lines += ["", "EACH HOST'S OWN TOP FINDING"]
    for name, found in own.items():
        top = found[0] if found else None
        lines += _wrap(f"{name}: [{top.cause}] {top.summary}" if top else f"{name}: none",
                       "  ", "      ")
    out.write("\n".join(lines) + "\n")


def write_json(out: TextIO, merged: Merged, findings: list[PathFinding],
               own: dict[str, list[Finding]]) -> None:
    kinds = _kinds(merged)
    record = {
        "kind": "merged",
        "hosts": [{"name": h.name, "hostname": h.start.host.hostname if h.start.host else None,
                   "netns": h.start.host.netns if h.start.host else h.start.netns,
                   "local_addrs": list(h.start.local_addrs), "events": len(h.events),
                   "clock_offset": o.offset, "clock_spread": o.spread,
                   "clock_matched": o.matched}
                  for h, o in zip(merged.hosts, merged.offsets)],
        "probes": [{"name": p.name, "source": p.source, "target": p.target,
                    "results": len(p.results)} for p in merged.probes],
        "paths": [{"packet": what, "count": count, "steps": list(steps)}
                  for (what, steps), count in kinds.most_common()],
        "findings": [{"cause": f.cause, "host": f.host, "summary": f.summary,
                      "evidence": f.evidence, "fix": f.fix, "packets": f.count,
                      "flows": sorted(f.flows)} for f in findings],
        "hosts_own": {name: [f.cause for f in found] for name, found in own.items()},
    }
    out.write(json.dumps(record) + "\n")
