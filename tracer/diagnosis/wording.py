"""How findings word what they found: the flows, their arrivals and drops, the
ping to contrast with, the counters that moved. Shared by the rules of every
domain; the words of one domain stay in its module."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from ..correlate.correlator import Flow
from ..model.kinds import HOOK_NAMES, Fate
from ..model.protocols import PROTO_NAMES, Proto
from .evidence import Evidence, FlowRef
from .tables import counter_meanings


def proto_label(proto: Proto) -> str:
    """'TCP', 'UDP', 'ICMP', 'ICMPV6'."""
    return (PROTO_NAMES.get(proto) or str(int(proto))).upper()


def flow_label(flow: Flow) -> str:
    """'TCP 10.0.1.2:40312 > 10.0.2.2:80': the peer first, as it sends to us."""
    lp = f":{flow.local_port}" if flow.local_port is not None else ""
    pp = f":{flow.peer_port}" if flow.peer_port is not None else ""
    return f"{proto_label(flow.proto)} {flow.peer}{pp} > {flow.local}{lp}"


def port_text(flow: Flow) -> str:
    """Where the flow's packets go on this host: ':80', or this host's address for a
    flow without a local port of its own (ICMP; packets to any port from a peer's
    watched port), never an empty word."""
    return f":{flow.local_port}" if flow.local_port is not None else flow.local


def remote_class(flow: Flow, ports: tuple[int, ...]) -> bool:
    """Whether the flow is one whose watched port is the peer's, not this host's:
    `watch --port N` is about the service on N here; a peer's packets from its own
    port N (a flood whose source port happens to be N, this host's own client
    connections to N elsewhere) are a lower class of flow."""
    return bool(ports) and flow.local_port not in ports and flow.peer_port in ports


def peer_port_text(flow: Flow) -> str:
    return f" :{flow.peer_port}" if flow.peer_port is not None else ""


def flow_ref(flow: Flow, count: int) -> FlowRef:
    conns = len(flow.members)
    label = flow_label(flow) + (f" ({conns} connections)" if conns > 1 else "")
    return FlowRef(flow.id, tuple(flow.members), label, count)


def what(flow: Flow, reason: str | None = None) -> str:
    """'TCP SYNs' or 'UDP datagrams' from the peer, for summaries; with a drop
    reason, what was dropped for it (SYNs only if every one was a SYN)."""
    if flow.proto is Proto.TCP:
        syns = flow.syn_in if reason is None else \
            flow.syn_drops.get(reason, 0) >= flow.drops.get(reason, 0)
        return "TCP SYNs" if syns else "TCP segments"
    if flow.proto.is_icmp:
        return f"{proto_label(flow.proto)} packets"
    return "UDP datagrams"


def arrivals(flow: Flow) -> str:
    seen = ", ".join(f"{n} at {HOOK_NAMES.get(where.hook)} {where.iface}"
                     for where, n in flow.arrived_on.most_common(3))
    return f"{flow.packets_in} arrived ({seen})" if seen else "none seen arriving"


def iface_of(flow: Flow) -> str:
    """The interface the flow's packets came in on, as far as anything saw."""
    ifaces = [a.iface for a in flow.arrived_on] + list(flow.drop_ifaces)
    return next((i for i in ifaces if i), "<iface>")


def drop_functions(flow: Flow, reason: str) -> Counter[str]:
    """The kernel functions that freed the flow's packets for this reason -> count."""
    return Counter({site.function: n for site, n in flow.drop_sites.items()
                    if site.reason == reason})


def where_dropped(flow: Flow, reason: str) -> str:
    """Where the kernel freed the flow's packets for this reason."""
    funcs = ", ".join(f for f, _ in drop_functions(flow, reason).most_common(2))
    return f" in {funcs}" if funcs else ""


def dropped_line(flow: Flow, dropped: int, reason: str, tail: str = "") -> str:
    """'6 arrived (6 at xdp eth0); 6 dropped in tcp_v4_rcv with reason TCP_CSUM'."""
    inferred = reason in flow._inferred
    how = f" ({reason}, inferred below)" if inferred else f" with reason {reason}"
    return f"{arrivals(flow)}; {dropped} dropped{where_dropped(flow, reason)}{how}{tail}"


def contrast(ev: Evidence, flow: Flow, outcome: str) -> list[str]:
    """'ICMP echo from X answered 5/5; TCP SYN to :80 from X dropped 6/6 (TCP_CSUM)'."""
    icmp = ev.icmp_with(flow.peer)
    if icmp is None or icmp is flow or not icmp.echo_requests_in:
        return []  # no ping to contrast with, or the flow is the ping
    answered = icmp.fates.get(Fate.ANSWERED, 0)
    return [f"ICMP echo from {flow.peer} answered {answered}/{icmp.echo_requests_in}; "
            f"{proto_label(flow.proto)} to {port_text(flow)} from {flow.peer} {outcome}"]


def counter_lines(ev: Evidence, names: Iterable[str]) -> list[str]:
    return [f"kernel counter {name} +{ev.counters[name]} during the watch"
            for name in names if ev.counters.get(name)]


def counter_evidence(ev: Evidence, names: Iterable[str]) -> list[str]:
    """Counter lines with what each counter means (tables/counters.json)."""
    meanings = counter_meanings()
    return [f"kernel counter {name} +{ev.counters[name]} during the watch: "
            f"{meanings[name].meaning}" for name in names if ev.counters.get(name)]


def ttls_text(ttls: Mapping[int, int]) -> str:
    return ", ".join(f"{ttl} x{n}" for ttl, n in sorted(ttls.items())) or "none"


def icmp_of(flow: Flow) -> Proto:
    """The ICMP of the flow's IP version: the errors about it come in that one."""
    return Proto.ICMPV6 if ":" in flow.local else Proto.ICMP
