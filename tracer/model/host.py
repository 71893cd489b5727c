"""The host's own context at the end of a watch, typed: what pktfate read of the
routes, neighbours, listeners, settings, programs and rules that decide a flow's
fate (host/context.py reads them; the JSON's `context` and `counters` lines carry
them; the recording reader makes these records of either). Field by field in the
README. A field's `json` metadata names its key where Python cannot."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Optional


@dataclass(frozen=True)
class RouteInfo:
    """`ip route get ADDR`: the way out toward an address, and rp_filter's settings
    (for peers: the route back)."""

    oif: Optional[str] = None
    gateway: Optional[str] = None
    src: Optional[str] = None
    mtu: Optional[int] = None
    rp_filter: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Neighbour:
    """The neighbour entry of a next hop, with the addresses that go through it."""

    addr: str
    iface: Optional[str]
    state: str  # the kernel's NUD_ state names, e.g. "REACHABLE", "FAILED"
    lladdr: Optional[str]
    for_addrs: tuple[str, ...] = field(default=(), metadata={"json": "for"})


@dataclass(frozen=True)
class CgroupProgram:
    attach: str  # "ingress", "egress", ...
    id: int
    name: str


@dataclass(frozen=True)
class Process:
    pid: int
    comm: str
    cgroup: Optional[str]
    unit: Optional[str]
    cgroup_programs: tuple[CgroupProgram, ...] = ()


@dataclass(frozen=True)
class ListenerSocket:
    addr: str
    accept_queue: int
    backlog: int
    processes: tuple[Process, ...] = ()


@dataclass(frozen=True)
class Listener:
    """The listening sockets on one port."""

    listening: int
    accept_queue: int
    half_open: int
    sockets: tuple[ListenerSocket, ...] = ()


def backend_key(addr: str, port: int | None) -> str:
    """'172.30.0.2:80', '[fd00::2]:80': how the context names a mapping's target."""
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


@dataclass(frozen=True)
class Backend:
    """Where a port mapping (DNAT) of this host sends packets, when that address
    is another network namespace of this host (a container): the namespace, and
    the TCP sockets listening on the mapped port there (read through /proc, the
    processes holding each; the backlog is not shown there: 0)."""

    addr: str
    port: int
    netns: int  # the namespace's inode number
    pid: int  # a process in it (nsenter --net=/proc/PID/ns/net reaches it)
    sockets: tuple[ListenerSocket, ...] = ()


@dataclass(frozen=True)
class Program:
    """Another tool's BPF program on an interface."""

    id: Optional[int]
    name: str


# hook ("xdp", "tc-ingress", "tc-egress") -> the programs there
Programs = Mapping[str, tuple[Program, ...]]


@dataclass(frozen=True)
class NatRule:
    """A NAT rule, with what its match and target say."""

    rule: str
    target: str  # DNAT, SNAT, REDIRECT, MASQUERADE
    to: str = ""
    proto: str = ""
    dport: str = ""


@dataclass(frozen=True)
class FirewallRule:
    """A DROP or REJECT rule whose counter moved during the watch."""

    rule: str
    packets: int
    verdict: str  # "DROP" or "REJECT"


@dataclass(frozen=True)
class InterfaceIdentity:
    """One interface of the watched namespace, as a recording names it."""

    name: str
    mac: Optional[str]  # None where it has none (lo, a tunnel)
    addrs: tuple[str, ...] = ()


@dataclass(frozen=True)
class HostIdentity:
    """Where a recording was made: what tells its host and namespace apart from
    another recording's (several hosts' recordings are matched by it)."""

    hostname: str
    machine_id: Optional[str]  # /etc/machine-id where present
    netns: int
    interfaces: tuple[InterfaceIdentity, ...] = ()


@dataclass(frozen=True)
class HostContext:
    """Everything the rules may ask about this host."""

    routes: Mapping[str, RouteInfo] = field(default_factory=dict)
    rewrite_routes: Mapping[str, RouteInfo] = field(default_factory=dict)
    neighbours: tuple[Neighbour, ...] = ()
    listeners: Mapping[str, Listener] = field(default_factory=dict)
    sysctls: Mapping[str, int] = field(default_factory=dict)
    programs: Mapping[str, Programs] = field(default_factory=dict)
    nat: tuple[NatRule, ...] = ()
    offload: Mapping[str, Optional[bool]] = field(default_factory=dict)
    firewall: tuple[FirewallRule, ...] = ()  # in the JSON: the counters line's
    # "ADDR:PORT" -> the local namespace a port mapping sends packets to
    backends: Mapping[str, Backend] = field(default_factory=dict)
    # the ipsets the moved rules match on: name -> its entries (addresses, networks)
    ipsets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
