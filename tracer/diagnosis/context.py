"""The host's recorded context in the words of a finding: the listener behind a
port (its processes, unit, queues and cgroup programs), the next hop toward an
address and its neighbour entry. Read from the evidence only, never the host."""

from __future__ import annotations

from ..correlate.correlator import Flow
from ..model.host import CgroupProgram, ListenerSocket, Process, RouteInfo
from .evidence import Evidence

SYN_SETTINGS = ("syncookies", "syn_backlog", "somaxconn")


def _process_text(proc: Process) -> str:
    unit = f", unit {proc.unit}" if proc.unit else ""
    return f"{proc.comm or '?'} (pid {proc.pid}{unit})"


def owners_text(sock: ListenerSocket) -> str:
    """'nginx (pid 42, unit nginx.service), ...': the processes holding a socket."""
    return ", ".join(_process_text(p) for p in sock.processes) or \
        "a process pktfate could not see"


def listener_sockets(ev: Evidence, port: object) -> tuple[ListenerSocket, ...]:
    listener = ev.listeners.get(str(port))
    return listener.sockets if listener is not None else ()


def listener_lines(ev: Evidence, port: object) -> list[str]:
    """Who listens on the port, with each socket's accept queue and its limit."""
    lines = []
    for sock in listener_sockets(ev, port):
        lines.append(f"listening on {sock.addr}:{port}: {owners_text(sock)}; accept queue "
                     f"{sock.accept_queue} of {sock.backlog}")
    return lines


def queue_lines(ev: Evidence, port: object) -> list[str]:
    """The SYN and accept queues of the port's listener and the settings that size
    them, at the end of the watch."""
    lines = []
    listener = ev.listeners.get(str(port))
    if listener:
        lines.append(f"at the end of the watch the listener on :{port} had "
                     f"{listener.half_open} half-open connections and "
                     f"{listener.accept_queue} waiting to be accepted")
    lines += listener_lines(ev, port)
    settings = ", ".join(f"{k}={v}" for k, v in ev.sysctls.items() if k.endswith(SYN_SETTINGS))
    if settings:
        lines.append(f"settings: {settings}")
    return lines


def cgroup_programs(ev: Evidence, port: object) -> list[tuple[Process, CgroupProgram]]:
    """(process, program) for every cgroup BPF program in effect on the port's
    listeners' cgroups."""
    found = []
    for sock in listener_sockets(ev, port):
        for proc in sock.processes:
            found += [(proc, prog) for prog in proc.cgroup_programs]
    return found


def socket_filter_lines(ev: Evidence, flow: Flow) -> tuple[list[str], list[str]]:
    """Evidence and fixes for packets a socket-level filter refused: the cgroup's
    programs when the listener's cgroup has some, else the socket's own filter."""
    if not listener_sockets(ev, flow.local_port):
        return [], []
    programs = cgroup_programs(ev, flow.local_port)
    if not programs:
        return (["the listener's cgroup runs no BPF program on its packets: the filter is "
                 "the socket's own (SO_ATTACH_FILTER or SO_ATTACH_BPF, set by the service)"],
                [])
    lines, fixes = [], []
    for proc, prog in programs:
        where = f"unit {proc.unit}" if proc.unit else f"cgroup {proc.cgroup}"
        lines.append(f"the listener {_process_text(proc)} is in {where}, which runs BPF "
                     f"program {prog.name or '?'} (id {prog.id}) on "
                     f"{prog.attach}: it refuses packets before the socket sees them")
        if proc.unit:
            fixes.append(f"systemctl show {proc.unit} -p IPAddressDeny -p IPAddressAllow: "
                         "allow the peers there (IPAddressAllow=) and restart the unit")
        else:
            fixes.append(f"bpftool cgroup show /sys/fs/cgroup{proc.cgroup} (where cgroup v2 "
                         f"is mounted): find who attached program "
                         f"{prog.id}, and allow the peers in it (or detach it)")
    return lines, list(dict.fromkeys(fixes))


def next_hop_lines(ev: Evidence, addr: str, route: RouteInfo | None = None) -> list[str]:
    """The route toward addr and its next hop's neighbour entry, with what the
    entry's state means for packets sent through it."""
    route = route if route is not None else (ev.routes.get(addr) or RouteInfo())
    hop = route.gateway or addr
    lines = []
    if route.oif:
        lines.append(f"route to {addr}: dev {route.oif}"
                     + (f" via {route.gateway}" if route.gateway else " (on-link)")
                     + (f", mtu {route.mtu}" if route.mtu else ""))
    for entry in ev.neighbours:
        if entry.addr != hop:
            continue
        state = entry.state
        mac = f" ({entry.lladdr})" if entry.lladdr else ""
        line = f"neighbour entry for {hop} on {entry.iface}: {state}{mac}"
        if "PERMANENT" in state:
            line += ": a static entry; if that address is wrong, everything sent through " \
                    "it is lost without a trace"
        elif "FAILED" in state or "INCOMPLETE" in state:
            line += f": {hop} does not answer ARP/NDP"
        lines.append(line)
    return lines
