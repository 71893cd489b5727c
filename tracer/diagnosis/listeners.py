"""Listeners and sockets: what the kernel answers for a port nothing listens on,
a service bound to another address, an accept queue that does not drain."""

from __future__ import annotations

from ..correlate.correlator import NO_SOCKET, Flow, Rewrite
from ..model.host import Backend, ListenerSocket, backend_key
from ..model.kinds import Fate, NatKind
from ..model.protocols import PORT_UNREACHABLE, Proto
from .causes import Cause
from .context import listener_sockets, owners_text
from .evidence import Evidence, Finding
from .wording import (
    arrivals,
    contrast,
    counter_lines,
    dropped_line,
    flow_ref,
    icmp_of,
    proto_label,
    what,
)

NO_LISTENER = Cause("no-listener", 70, "nothing listens on the port: the kernel answers RST or "
                    "ICMP port unreachable")
LOCALHOST_ONLY = Cause("localhost-only", 72, "the service listens only on another address "
                       "(127.0.0.1, ::1 or another of this host's): connections to the address "
                       "the peers use are refused", also_explains=(NO_SOCKET,))
LISTEN_OVERFLOW = Cause("listen-overflow", 75, "the listener's accept queue is full: the "
                        "application does not accept fast enough", explains_unanswered=True)
CAUSES = (NO_LISTENER, LOCALHOST_ONLY, LISTEN_OVERFLOW)
LISTEN_OVERFLOW_REASON = "TCP_LISTEN_OVERFLOW"


def rule_no_listener(ev: Evidence) -> list[Finding]:
    findings = []
    for flow in ev.watched:
        no_socket = flow.drops.get(NO_SOCKET, 0)
        if flow.proto is Proto.TCP:
            answered = flow.fates.get(Fate.RESET, 0)
            how = "RST"
        else:
            answered = flow.icmp_errors_sent.get(PORT_UNREACHABLE[icmp_of(flow)], 0)
            how = "ICMP port unreachable"
        dnat = next((r for r in flow.rewrites if r.kind is NatKind.DNAT), None)
        # A mapped port's refusal comes back from the backend: its kernel's own
        # events are seen only where the backend is a namespace of this host.
        if not answered or not (no_socket or flow.kernel_resets or dnat):
            continue
        backend = backend_of(ev, dnat) if dnat else None
        if backend is not None and backend_elsewhere(backend):
            findings.append(_backend_listens_elsewhere(ev, flow, answered, how, backend))
            continue
        elsewhere = listening_elsewhere(ev, flow) if not dnat else []
        if elsewhere:
            findings.append(_listens_elsewhere(ev, flow, answered, how, elsewhere))
            continue
        if flow.local_port is None:  # from a peer's watched port to ports of this host
            findings.append(_refused_ports(flow, answered, how, no_socket))
            continue
        where = f"on {dnat.addr}:{dnat.port}, where this host's DNAT sends port " \
            f"{flow.local_port}" if dnat else \
            f"on {proto_label(flow.proto)} port {flow.local_port} here"
        finding = Finding(
            NO_LISTENER.id,
            f"Nothing listens {where}: the kernel answered {answered} {what(flow)} from "
            f"{flow.peer} with {how}.", flows=[flow_ref(flow, answered)], count=answered)
        finding.evidence.append(f"{arrivals(flow)}; {answered} answered by the kernel with "
                                f"{how}, {no_socket} freed with reason NO_SOCKET")
        finding.evidence += counter_lines(ev, ("TcpOutRsts", "UdpNoPorts"))
        finding.evidence += contrast(ev, flow, f"refused {answered}/{flow.packets_in} ({how})")
        opt = "t" if flow.proto is Proto.TCP else "u"
        if dnat:
            if backend is not None:
                finding.evidence.append(
                    f"{dnat.addr} is this host's network namespace {backend.netns} (process "
                    f"{backend.pid} is in it): nothing listens on TCP port {dnat.port} there")
            finding.fix = [f"start the service on {dnat.addr} port {dnat.port} (the container or "
                           "backend behind the mapping), or point the mapping at its port"]
            findings.append(finding)
            continue
        finding.fix = [
            f"start the service on port {flow.local_port}, or make it listen on {flow.local}: "
            f"check with ss -l{opt}np 'sport = :{flow.local_port}'",
            "a service in a container or another network namespace does not listen here",
        ]
        findings.append(finding)
    return findings


WILDCARDS = ("0.0.0.0", "::")


def _refused_ports(flow: Flow, answered: int, how: str,
                   no_socket: int) -> Finding:
    """The kernel refused packets from a peer's watched port to ports of this host
    where nothing listens (merged over those ports)."""
    sent = what(flow, NO_SOCKET)
    finding = Finding(
        NO_LISTENER.id,
        f"Nothing listens on the {proto_label(flow.proto)} ports of {flow.local} that "
        f"{sent} from {flow.peer}:{flow.peer_port} went to: the kernel answered {answered} "
        f"of them with {how}.", flows=[flow_ref(flow, answered)], count=answered,
        confidence="medium")
    finding.evidence.append(f"{arrivals(flow)}; {answered} answered by the kernel with "
                            f"{how}, {no_socket} freed with reason NO_SOCKET")
    finding.fix = [f"if {flow.peer} should reach a service here, start it on the port it "
                   "sends to; if not, nothing here needs fixing: these are the peer's doing "
                   "(a scan or a misdirected client)"]
    return finding


def backend_of(ev: Evidence, dnat: Rewrite) -> Backend | None:
    """The local namespace behind a port mapping, as the context read it."""
    return ev.host.backends.get(backend_key(dnat.addr, dnat.port))


def backend_elsewhere(backend: Backend) -> bool:
    """Whether the backend's listeners on the mapped port all take another address
    than the one the mapping sends to (its own 127.0.0.1, say)."""
    takes = {backend.addr, f"::ffff:{backend.addr}", *WILDCARDS}
    return bool(backend.sockets) and not any(s.addr in takes for s in backend.sockets)


def _backend_listens_elsewhere(ev: Evidence, flow: Flow, answered: int, how: str,
                               backend: Backend) -> Finding:
    where = ", ".join(s.addr for s in backend.sockets)
    mapped = backend_key(backend.addr, backend.port)
    finding = Finding(
        LOCALHOST_ONLY.id,
        f"Port {flow.local_port} is mapped to {mapped}, a network namespace of this host "
        f"(a container), where the service listens on {where} only: the mapped "
        f"connections are refused ({answered} {what(flow)} from {flow.peer} answered with "
        f"{how}).", flows=[flow_ref(flow, answered)], count=answered)
    finding.evidence.append(f"{arrivals(flow)}; {answered} answered with {how} from "
                            f"{backend.addr}")
    for sock in backend.sockets:
        finding.evidence.append(f"in namespace {backend.netns}: listening on "
                                f"{sock.addr}:{backend.port}: {owners_text(sock)}")
    finding.evidence += contrast(ev, flow, f"refused {answered}/{flow.packets_in} ({how})")
    finding.fix = [
        f"make the service in that namespace listen on {backend.addr} or on every address "
        f"(0.0.0.0 or ::): a port mapping reaches the container's own address, never its "
        f"127.0.0.1 (its bind setting, e.g. --bind 0.0.0.0)",
        f"then verify: nsenter --net=/proc/{backend.pid}/ns/net ss -ltnp "
        f"'sport = :{backend.port}' shows 0.0.0.0 or {backend.addr}",
    ]
    return finding


def listening_elsewhere(ev: Evidence, flow: Flow) -> list[ListenerSocket]:
    """The listening sockets on the flow's port that do not take its address (bound
    to 127.0.0.1, ::1 or another address of this host); [] when one does, or when
    nothing was recorded. IPv4 peers reach a '::' socket too (v4-mapped)."""
    sockets = listener_sockets(ev, flow.local_port)
    if flow.proto is not Proto.TCP or not sockets:
        return []
    takes = {flow.local, f"::ffff:{flow.local}", *WILDCARDS}
    if any(s.addr in takes for s in sockets):
        return []
    return list(sockets)


def _listens_elsewhere(ev: Evidence, flow: Flow, answered: int, how: str,
                       sockets: list[ListenerSocket]) -> Finding:
    where = ", ".join(s.addr for s in sockets)
    finding = Finding(
        LOCALHOST_ONLY.id,
        f"The service on port {flow.local_port} listens on {where} only: connections to "
        f"{flow.local} are refused ({answered} {what(flow)} from {flow.peer} answered with "
        f"{how}).", flows=[flow_ref(flow, answered)], count=answered)
    finding.evidence.append(f"{arrivals(flow)}; {answered} answered by the kernel with {how}")
    for sock in sockets:
        finding.evidence.append(f"listening on {sock.addr}:{flow.local_port}: "
                                f"{owners_text(sock)}")
    finding.evidence += contrast(ev, flow, f"refused {answered}/{flow.packets_in} ({how})")
    finding.fix = [
        f"make the service listen on {flow.local} or on every address (0.0.0.0 or ::): its "
        "bind or listen setting, e.g. --bind 0.0.0.0, listen 0.0.0.0:"
        f"{flow.local_port}, or [::]:{flow.local_port}",
        f"then verify: ss -ltnp 'sport = :{flow.local_port}' shows 0.0.0.0 or {flow.local}",
    ]
    return finding


def rule_listen_overflow(ev: Evidence) -> list[Finding]:
    flows = [f for f in ev.watched if f.drops.get(LISTEN_OVERFLOW_REASON)]
    # ListenDrops alone is not enough: it also counts SYNs with no route back.
    moved = ev.counters.get("TcpExtListenOverflows", 0)
    if not flows and not moved:
        return []
    count = sum(f.drops.get(LISTEN_OVERFLOW_REASON, 0) for f in flows) or moved
    port = flows[0].local_port if flows else (ev.ports[0] if ev.ports else "?")
    finding = Finding(
        LISTEN_OVERFLOW.id,
        f"The listening socket on :{port} has a full accept queue: the kernel drops new "
        "connections until the application accepts the ones waiting.",
        flows=[flow_ref(f, f.drops.get(LISTEN_OVERFLOW_REASON, 0)) for f in flows], count=count)
    for flow in flows:
        finding.evidence.append(dropped_line(flow, flow.drops[LISTEN_OVERFLOW_REASON],
                                              LISTEN_OVERFLOW_REASON))
    finding.evidence += counter_lines(ev, ("TcpExtListenOverflows", "TcpExtListenDrops"))
    finding.fix = [
        f"see the queue: ss -ltn 'sport = :{port}' (Recv-Q = waiting, Send-Q = backlog)",
        "make the application accept faster, or raise its listen() backlog and "
        "net.core.somaxconn",
    ]
    return [finding]
