"""What the diagnosis looks at (the flows, merged per peer and service, raised to
the kernel's exact counts; counters; host context) and what it says (findings)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

from ..correlate.correlator import Flow, merge_flows
from .locations import host_facts, name_unnamed_drops


@dataclass
class Finding:
    cause: str
    summary: str
    flows: list[dict] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    fix: list[str] = field(default_factory=list)
    confidence: str = "high"
    count: int = 0  # packets the finding accounts for: ranks findings of one severity

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Evidence:
    flows: list[Flow]
    counters: dict[str, int] = field(default_factory=dict)  # deltas during the watch
    ports: tuple[int, ...] = ()
    lost: int = 0
    firewall: list[dict] = field(default_factory=list)  # rules whose counters moved
    routes: dict[str, dict] = field(default_factory=dict)  # peer -> route back, rp_filter
    offload: dict[str, bool | None] = field(default_factory=dict)  # iface -> tx csum offload
    sampled: int = 0  # events the kernel counted but did not send (sampling)
    kernel_counts: list[dict] = field(default_factory=list)  # the kernel's exact counts
    listeners: dict[str, dict] = field(default_factory=dict)  # port -> half_open, accept_queue
    sysctls: dict[str, int] = field(default_factory=dict)  # the settings that decide fates
    neighbours: list[dict] = field(default_factory=list)  # next hops' entries (context)
    programs: dict[str, dict] = field(default_factory=dict)  # iface -> other tools' BPF
    nat: list[dict] = field(default_factory=list)  # NAT rules with their match
    rewrite_routes: dict[str, dict] = field(default_factory=dict)  # NAT target -> route

    def __post_init__(self) -> None:
        # Rules reason about a peer and a service, not each connection apart.
        self.connections = self.flows
        self.flows = merge_flows(self.flows, self.ports)
        by_pair: dict[tuple, list[dict]] = {}  # once, not a scan of every entry per flow
        for entry in self.kernel_counts:
            by_pair.setdefault((entry["proto"], frozenset((entry["src"], entry["dst"]))),
                               []).append(entry)
        for flow in self.flows:
            exact_counts(flow, by_pair.get((flow.proto, frozenset((flow.local, flow.peer))), []))
        for flow in self.flows:
            name_unnamed_drops(flow, self.counters, host_facts(self.listeners, flow.local_port))

    @property
    def watched(self) -> list[Flow]:
        return [f for f in self.flows if f.proto in ("tcp", "udp")]

    def icmp_with(self, peer: str) -> Flow | None:
        for flow in self.flows:
            if flow.proto.startswith("icmp") and flow.peer == peer:
                return flow
        return None


def _counts_for(flow: Flow, entry: dict) -> bool:
    """Whether an entry of the kernel's counts between the flow's two hosts is about
    this (merged) flow."""
    if flow.proto not in ("tcp", "udp"):
        return True
    ports = {entry["sport"], entry["dport"]} - {None}
    wanted = {flow.local_port, flow.peer_port} - {None}
    return not wanted or bool(ports & wanted)


def exact_counts(flow: Flow, kernel_counts: list[dict]) -> None:
    """Raise the flow's event-based counts to the kernel's exact ones where events
    were sampled or lost: drops per reason, arrivals, SYNs that arrived. `kernel_counts`
    holds the entries of the flow's protocol between its two hosts."""
    entries = [e for e in kernel_counts if _counts_for(flow, e)]
    drops: Counter = Counter()
    arrivals: Counter = Counter()
    syns: Counter = Counter()
    for e in entries:
        if e["hook"] == "drop":
            drops[e["reason"] or "UNKNOWN"] += e["count"]
        elif e["hook"] in ("xdp", "tc-ingress") and e["dst"] == flow.local:
            arrivals[e["hook"]] += e["count"]
            syns[e["hook"]] += e["count"] if e["tcp_flags"] == "S" else 0
    for reason, count in drops.items():
        flow.drops[reason] = max(flow.drops.get(reason, 0), count)
    first = "xdp" if arrivals.get("xdp") else "tc-ingress"
    flow.packets_in = max(flow.packets_in, arrivals.get(first, 0))
    flow.syn_in = max(flow.syn_in, syns.get(first, 0))


