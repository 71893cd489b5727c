"""The agent's metrics in Prometheus's exposition formats, through
prometheus_client: the kernel's counts read at each scrape (exact, never a
sample), labelled by what runs in each namespace.

METRICS is the one description of what is exported: the collector follows it,
and the README's table is held equal to it (tests/unit/test_agent.py).

Label values are bounded. A namespace, a kernel function or a drop reason is
admitted as a label value at its first sight while its cap has room, and keeps
that value; past the cap, its counts join the value "other". Admission never
changes afterwards, so every series only grows (as a Prometheus counter must),
and a port scan adds no series at all: ports are no label."""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..model.fleet import CounterSnapshot, Runtime, SentKind, Workload
from ..model.protocols import ICMP_BY_FAMILY, IcmpCode, Proto

OTHER = "other"


@dataclass(frozen=True)
class MetricSpec:
    name: str  # as exported (a counter's with _total)
    type: str  # "counter" or "gauge"
    labels: tuple[str, ...]
    help: str


METRICS = (
    MetricSpec("pktfate_drops_total", "counter",
               ("reason", "function", "proto", "direction", "netns", "workload"),
               "Packets the kernel dropped (skb:kfree_skb), by drop reason and the kernel "
               "function that freed them."),
    MetricSpec("pktfate_sent_total", "counter", ("kind", "what", "netns", "workload"),
               "RSTs and ICMP errors this host sent (tcp:tcp_send_reset, icmp:icmp_send)."),
    MetricSpec("pktfate_findings_total", "counter", ("cause",),
               "Top causes the armed watches' diagnoses found, one per incident."),
    MetricSpec("pktfate_incidents_total", "counter", ("port", "outcome"),
               "Watched ports that failed past the threshold: recorded, suppressed by a rate "
               "limit, or failed (the watch could not run)."),
    MetricSpec("pktfate_events_lost_total", "counter", (),
               "Events the armed watches' ring buffers had no room for."),
    MetricSpec("pktfate_unkeyed_total", "counter", ("table",),
               "Counts whose key found no room in a kernel table: kept under \"other\"."),
    MetricSpec("pktfate_build_info", "gauge", ("version", "kernel", "bcc", "btf"),
               "pktfate's version and what it runs on; always 1."),
)
SPECS = {spec.name: spec for spec in METRICS}


@dataclass(frozen=True)
class LabelCaps:
    """How many distinct values a label may take before "other"."""

    netns: int = 256
    function: int = 128
    reason: int = 256


class Admitted:
    """Values of one label, admitted at first sight while there is room."""

    def __init__(self, cap: int):
        self.cap = cap
        self._values: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._values:
            return value
        if len(self._values) < self.cap:
            self._values.add(value)
            return value
        return OTHER


PROTO_NAMES = {int(Proto.TCP): "tcp", int(Proto.UDP): "udp", int(Proto.ICMP): "icmp",
               int(Proto.ICMPV6): "icmpv6"}


def proto_label(family: int, proto: int) -> str:
    """'tcp', 'udp', 'icmp', 'icmpv6'; 'ip' for another IP protocol; 'non-ip'."""
    return PROTO_NAMES.get(proto, "ip") if family else "non-ip"


def workload_label(workload: Workload) -> str:
    """'host', 'netns:web', 'docker:0123456789ab', 'pod:shop/cart-7d9' (or
    'pod:<uid>' where the pod's name is not known), 'unknown'."""
    if workload.runtime in (Runtime.HOST, Runtime.UNKNOWN):
        return workload.runtime.value
    if workload.runtime is Runtime.NETNS:
        return f"netns:{workload.name}"
    if workload.pod or workload.pod_uid:
        return f"pod:{workload.pod or workload.pod_uid}"
    return f"{workload.runtime.value}:{workload.container[:12]}"


def sent_what(kind: SentKind, family: int, icmp_type: int, icmp_code: int) -> str:
    """'rst', or the ICMP error's name in its family ('port unreachable' as
    'port-unreachable'), else 'icmp-3/13'."""
    if kind is SentKind.RST:
        return "rst"
    icmp = ICMP_BY_FAMILY.get(family)
    name = icmp.error_name(IcmpCode(icmp_type, icmp_code)) if icmp else None
    if name:
        return name.replace(" ", "-")
    return f"icmp{'v6' if family == 6 else ''}-{icmp_type}/{icmp_code}"


@dataclass
class AgentState:
    """What the agent adds to the kernel's counts: its incidents and findings.
    Written by the agent's loop, read by scrapes: under one lock."""

    version: str
    environment: dict[str, str]

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.findings: Tally[str] = Tally()
        self.incidents: Tally[tuple[int, str]] = Tally()
        self.events_lost = 0


class AgentCollector(Collector):
    """Reads the kernel's tables at each scrape (`read`), names each namespace's
    workload (`workload_of`), and exports METRICS."""

    def __init__(self, read: Callable[[], CounterSnapshot],
                 workload_of: Callable[[int], Workload], state: AgentState,
                 caps: LabelCaps = LabelCaps()):
        self.read, self.workload_of, self.state = read, workload_of, state
        self._netns, self._function = Admitted(caps.netns), Admitted(caps.function)
        self._reason = Admitted(caps.reason)
        self._lock = threading.Lock()  # the admissions: one scrape at a time

    def _family(self, name: str, labels: Mapping[tuple[str, ...], float]) -> Metric:
        spec = SPECS[name]
        kind = CounterMetricFamily if spec.type == "counter" else GaugeMetricFamily
        family = kind(spec.name, spec.help, labels=spec.labels)
        for values, value in sorted(labels.items()):
            family.add_metric(list(values), value)
        return family

    def _where(self, netns: int) -> tuple[str, str]:
        admitted = self._netns(str(netns))
        if admitted == OTHER:
            return OTHER, OTHER
        return admitted, workload_label(self.workload_of(netns))

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            snap = self.read()
            drops: Tally[tuple[str, ...]] = Tally()
            for d in snap.drops:
                drops[(self._reason(d.reason or "unknown"), self._function(d.function),
                       proto_label(d.family, d.proto), d.direction.name.lower(),
                       *self._where(d.netns))] += d.count
            if snap.drops_unkeyed:
                drops[(OTHER, OTHER, OTHER, OTHER, OTHER, OTHER)] += snap.drops_unkeyed
            sent: Tally[tuple[str, ...]] = Tally()
            for s in snap.sent:
                sent[(s.kind.name.lower(), sent_what(s.kind, s.family, s.icmp_type,
                                                     s.icmp_code),
                      *self._where(s.netns))] += s.count
            if snap.sent_unkeyed:
                sent[(OTHER, OTHER, OTHER, OTHER)] += snap.sent_unkeyed
        yield self._family("pktfate_drops_total", dict(drops))
        yield self._family("pktfate_sent_total", dict(sent))
        state = self.state
        with state.lock:
            findings: dict[tuple[str, ...], float] = {
                (cause,): float(n) for cause, n in state.findings.items()}
            incidents: dict[tuple[str, ...], float] = {
                (str(port), outcome): float(n)
                for (port, outcome), n in state.incidents.items()}
            lost = float(state.events_lost)
        yield self._family("pktfate_findings_total", findings)
        yield self._family("pktfate_incidents_total", incidents)
        yield self._family("pktfate_events_lost_total", {(): lost})
        yield self._family("pktfate_unkeyed_total", {
            ("drops",): float(snap.drops_unkeyed), ("sent",): float(snap.sent_unkeyed),
            ("ports",): float(snap.ports_unkeyed)})
        env = state.environment
        yield self._family("pktfate_build_info", {
            (state.version, env.get("kernel", ""), env.get("bcc", ""), env.get("BTF", "")): 1.0})
