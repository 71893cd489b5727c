"""Drops the kernel did not name: the reason told by where they were freed.

Kernels before 5.17 give skb:kfree_skb no reason at all (the event's reason is
null and the flow counts them as UNKNOWN); newer ones leave some paths
NOT_SPECIFIED. The function that freed the packet, the counters that moved and
what pktfate saw of the packets (its own checksum check, what was sent back) still
tell the reason, by the table in tables/drop_locations.json. What is inferred says
so, with what it rests on."""

from __future__ import annotations

from collections.abc import Mapping

from ..correlate.correlator import UNKNOWN_REASON, DropSite, Flow
from ..model.host import Listener
from ..model.kinds import verdict_name
from .tables import LocationReason, drop_locations

UNNAMED = (UNKNOWN_REASON, "NOT_SPECIFIED")
# The table's 'host' grounds: facts of the watch's recorded context about the
# flow's port, and how a finding words them.
HOST_FACTS = {
    "listener_ingress_programs": "cgroup BPF program(s) filtering the listener's incoming "
                                 "packets",
    "listeners": "socket(s) listening on the port",
}


def host_facts(listeners: Mapping[str, Listener], port: object) -> dict[str, int]:
    """The HOST_FACTS that hold for a port, from the context's listeners."""
    listener = listeners.get(str(port))
    sockets = listener.sockets if listener is not None else ()
    programs = [prog for sock in sockets for proc in sock.processes
                for prog in proc.cgroup_programs if prog.attach == "ingress"]
    return {"listener_ingress_programs": len(programs), "listeners": len(sockets)}


def _grounds(candidate: LocationReason, flow: Flow, counters: Mapping[str, int],
             facts: dict[str, int]) -> list[str]:
    """What supports `candidate` for this flow ([] when it does not hold). 'host'
    facts and 'silent' counters are conditions, every one required; counters,
    checksums and answers are alternatives, one at least when any is listed."""
    if candidate.always:
        return ["the function alone says it"]
    answers = flow.synack_out + flow.rst_out + sum(flow.icmp_errors_sent.values())
    if any(not facts.get(h) for h in candidate.host) or \
            any(counters.get(name) for name in candidate.silent) or \
            (candidate.unanswered and answers):
        return []
    grounds = [f"{name} +{counters[name]}" for name in candidate.counters if counters.get(name)]
    grounds += [f"{flow.checksums[v]} with a {verdict_name(v)} checksum by pktfate's own check"
                for v in candidate.checksums if flow.checksums.get(v)]
    sent = {"rst_out": (flow.rst_out, "RSTs sent back"),
            "icmp_errors": (sum(flow.icmp_errors_sent.values()), "ICMP errors sent back"),
            "echo_replies": (flow.echo_replies_out, "echo replies sent back")}
    grounds += [f"{sent[a][0]} {sent[a][1]}" for a in candidate.answers if sent[a][0]]
    if not grounds and (candidate.counters or candidate.checksums or candidate.answers):
        return []
    grounds += [f"{facts[h]} {HOST_FACTS[h]}" for h in candidate.host]
    if candidate.silent:
        grounds.append(f"none of {', '.join(candidate.silent)} moved, which count the "
                       "place's other drops")
    if candidate.unanswered:
        grounds.append("nothing was sent back")
    if grounds:
        grounds += [f"{flow.checksums[v]} with a {verdict_name(v)} checksum at arrival"
                    for v in candidate.supporting if flow.checksums.get(v)]
    return grounds


def infer(function: str, flow: Flow, counters: Mapping[str, int],
          unnamed: str = UNKNOWN_REASON,
          facts: dict[str, int] | None = None) -> tuple[str, str] | None:
    """(reason, what it rests on) for drops freed in `function`, or None. Drops a
    kernel with reasons left NOT_SPECIFIED are named only by places that say it
    alone: that kernel would have named the others."""
    # A compiler's copy of a function keeps its name with a suffix
    # (ip_rcv_finish_core.constprop.0): the table names the function.
    for candidate in drop_locations().get(function.split(".", 1)[0], ()):
        if unnamed != UNKNOWN_REASON and not candidate.always:
            continue
        grounds = _grounds(candidate, flow, counters, facts or {})
        if grounds:
            return candidate.reason, f"freed in {function}; " + ", ".join(grounds)
    return None


def name_unnamed_drops(flow: Flow, counters: Mapping[str, int],
                       facts: dict[str, int] | None = None) -> None:
    """Move a flow's unnamed drops to the reason their place tells, and note on
    the flow what each rests on."""
    for site, count in list(flow.drop_sites.items()):
        if site.reason not in UNNAMED:
            continue
        found = infer(site.function, flow, counters, site.reason, facts)
        if found is None:
            continue
        reason, how = found
        flow.drops[site.reason] -= count
        flow.drops[reason] += count
        flow.drop_sites[site] -= count
        flow.drop_sites[DropSite(reason, site.function)] += count
        syns = min(count, flow.syn_drops.get(site.reason, 0))
        flow.syn_drops[site.reason] -= syns
        flow.syn_drops[reason] += syns
        kernel = "this kernel names no drop reasons (before 5.17)" \
            if site.reason == UNKNOWN_REASON \
            else "the kernel gave no reason (NOT_SPECIFIED)"
        flow._inferred[reason] = f"{reason} inferred: {kernel}; {how}"
    for counter in (flow.drops, flow.drop_sites, flow.syn_drops):
        for key in [k for k, v in counter.items() if v <= 0]:
            del counter[key]


def inferred_lines(flow: Flow) -> list[str]:
    """What the reasons pktfate gave this flow's drops rest on, a line each."""
    return list(flow._inferred.values())
