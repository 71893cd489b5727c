"""What the diagnosis looks at (the flows, merged per peer and service, raised to
the kernel's exact counts; counters; host context) and what it says (findings)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..correlate.correlator import UNKNOWN_REASON, Flow, merge_flows
from ..decode.events import KernelCount
from ..model.host import (
    FirewallRule,
    HostContext,
    Listener,
    NatRule,
    Neighbour,
    Programs,
    RouteInfo,
)
from ..model.kinds import Fate, Hook
from ..model.protocols import Proto, TcpFlags
from .locations import host_facts, name_unnamed_drops


@dataclass(frozen=True)
class FlowRef:
    """A flow a finding is about: its id, the connections merged into it, its
    label and how many of its packets the finding accounts for."""

    flow: int
    flows: tuple[int, ...]
    label: str
    count: int


@dataclass
class Finding:
    cause: str  # a Cause's id (registry.CAUSES)
    summary: str
    flows: list[FlowRef] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    fix: list[str] = field(default_factory=list)
    confidence: str = "high"
    count: int = 0  # packets the finding accounts for: ranks findings of one severity

    def about(self, flow_id: int) -> bool:
        """Whether it speaks of this flow (or of no flow in particular)."""
        return not self.flows or any(ref.flow == flow_id for ref in self.flows)


@dataclass
class Evidence:
    flows: list[Flow]
    counters: Mapping[str, int] = field(default_factory=dict)  # deltas during the watch
    ports: tuple[int, ...] = ()
    lost: int = 0
    sampled: int = 0  # events the kernel counted but did not send (sampling)
    kernel_counts: list[KernelCount] = field(default_factory=list)  # the kernel's exact counts
    host: HostContext = field(default_factory=HostContext)

    def __post_init__(self) -> None:
        # Rules reason about a peer and a service, not each connection apart.
        self.connections = self.flows
        self.flows = merge_flows(self.flows, self.ports)
        by_pair: dict[tuple[Proto, frozenset[str]], list[KernelCount]] = {}
        for entry in self.kernel_counts:  # once, not a scan of every entry per flow
            by_pair.setdefault((entry.proto, frozenset((entry.src, entry.dst))),
                               []).append(entry)
        for flow in self.flows:
            exact_counts(flow, by_pair.get((flow.proto, frozenset((flow.local, flow.peer))), []))
        for flow in self.flows:
            name_unnamed_drops(flow, self.counters,
                               host_facts(self.host.listeners, flow.local_port))

    # The host's context, by its parts (model/host.py): what the rules read.
    @property
    def firewall(self) -> tuple[FirewallRule, ...]:
        return self.host.firewall

    @property
    def routes(self) -> Mapping[str, RouteInfo]:
        return self.host.routes

    @property
    def rewrite_routes(self) -> Mapping[str, RouteInfo]:
        return self.host.rewrite_routes

    @property
    def offload(self) -> Mapping[str, bool | None]:
        return self.host.offload

    @property
    def listeners(self) -> Mapping[str, Listener]:
        return self.host.listeners

    @property
    def sysctls(self) -> Mapping[str, int]:
        return self.host.sysctls

    @property
    def neighbours(self) -> tuple[Neighbour, ...]:
        return self.host.neighbours

    @property
    def programs(self) -> Mapping[str, Programs]:
        return self.host.programs

    @property
    def nat(self) -> tuple[NatRule, ...]:
        return self.host.nat

    @property
    def watched(self) -> list[Flow]:
        return [f for f in self.flows if f.proto.has_ports]

    def icmp_with(self, peer: str) -> Flow | None:
        for flow in self.flows:
            if flow.proto.is_icmp and flow.peer == peer:
                return flow
        return None


def _counts_for(flow: Flow, entry: KernelCount) -> bool:
    """Whether an entry of the kernel's counts between the flow's two hosts is about
    this (merged) flow."""
    if not flow.proto.has_ports:
        return True
    inbound = entry.dst == flow.local
    local_port, peer_port = (entry.dport, entry.sport) if inbound else \
        (entry.sport, entry.dport)
    # The kernel keeps the watched side's port only: the service's own port for a
    # flow to it, the peer's for one to a watched port elsewhere. A flood whose
    # source port happens to be the service's is the peer's port, not this flow's.
    if flow.local_port is not None:
        return local_port == flow.local_port
    if flow.peer_port is not None:
        return peer_port == flow.peer_port
    return True


def exact_counts(flow: Flow, kernel_counts: list[KernelCount]) -> None:
    """Raise the flow's event-based counts to the kernel's exact ones where events
    were sampled or lost: drops per reason, arrivals, SYNs that arrived. `kernel_counts`
    holds the entries of the flow's protocol between its two hosts."""
    drops: Counter[str] = Counter()
    arrivals: Counter[Hook] = Counter()
    syns: Counter[Hook] = Counter()
    for e in kernel_counts:
        if not _counts_for(flow, e):
            continue
        if e.hook is Hook.KFREE_SKB:
            drops[e.reason or UNKNOWN_REASON] += e.count
        elif e.hook.is_arrival and e.dst == flow.local:
            arrivals[e.hook] += e.count
            syns[e.hook] += e.count if e.tcp_flags == TcpFlags.SYN else 0
    for reason, count in drops.items():
        flow.drops[reason] = max(flow.drops.get(reason, 0), count)
    first = Hook.XDP if arrivals.get(Hook.XDP) else Hook.TC_INGRESS
    flow.packets_in = max(flow.packets_in, arrivals.get(first, 0))
    flow.syn_in = max(flow.syn_in, syns.get(first, 0))


def attempts(flow: Flow) -> int:
    """Connection attempts: SYNs, not counting the peer's retries of one."""
    return max(flow.syn_in - flow.syn_retrans_in, 0)


def incomplete(flow: Flow) -> int:
    """Attempts this host answered whose handshake never completed."""
    return max(min(attempts(flow), flow.syn_fates.get(Fate.ANSWERED, 0)) - flow.completed, 0)
