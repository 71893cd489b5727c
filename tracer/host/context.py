"""The host's own context at the end of a watch, read only, for the peers, ports
and interfaces of the watched flows: what an operator would check by hand with
ss, sysctl, ip route get, ip neigh, bpftool and iptables-save. One record, in
the JSON as `context`; `pktfate explain` uses the recorded one and never reads
the host it runs on."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..model.host import backend_key
from ..model.kinds import NatKind
from . import firewall, namespaces, netlink, sockets

MAX_PEERS = 16  # routes and neighbours for the busiest peers only: a scan has thousands


def rp_filter_settings() -> dict[str, int]:
    """net.ipv4.conf.*.rp_filter of this namespace (the kernel uses the maximum of
    'all' and the interface's own)."""
    found = {}
    for path in sorted(Path("/proc/sys/net/ipv4/conf").glob("*/rp_filter")):
        try:
            value = int(path.read_text())
        except (OSError, ValueError):
            continue
        if value or path.parent.name == "all":
            found[path.parent.name] = value
    return found


def _peers(flows) -> list[str]:
    busiest = sorted(flows, key=lambda f: -(f.packets_in + f.packets_out))
    peers: list[str] = []
    for flow in busiest:
        if flow.peer not in peers:
            peers.append(flow.peer)
    return peers[:MAX_PEERS]


def _rewrite_targets(flows) -> list[str]:
    return sorted({r.addr for f in flows for r in f.rewrites if r.kind is NatKind.DNAT})


def backends(flows) -> dict[str, dict]:
    """The port mappings' targets that are namespaces of this host (containers):
    which namespace, and what listens on the mapped port there."""
    found: dict[str, dict] = {}
    rewrites = sorted({r for f in flows for r in f.rewrites if r.kind is NatKind.DNAT},
                      key=lambda r: (r.addr, r.port or 0))
    if not rewrites:
        return found
    spaces = namespaces.namespaces()  # one pass over /proc for every target
    mount = sockets.cgroup2_mount()
    for rewrite in rewrites:
        holder = namespaces.holder_of(rewrite.addr, spaces=spaces)
        if holder is None or rewrite.port is None:
            continue
        inode, pid = holder
        rows = namespaces.listening(pid, rewrite.port)
        owners = sockets.socket_owners({row[2] for row in rows})
        found[backend_key(rewrite.addr, rewrite.port)] = {
            "addr": rewrite.addr, "port": rewrite.port, "netns": inode, "pid": pid,
            "sockets": [{"addr": addr, "accept_queue": queue, "backlog": 0,
                         "processes": [sockets.process(p, mount) for p in owners.get(ino, [])]}
                        for addr, queue, ino in rows]}
    return found


def _flow_ifaces(flows) -> set[str]:
    return {a.iface for f in flows for a in f.arrived_on if a.iface} | \
        {i for f in flows for i in f.drop_ifaces if i}


def _neighbours(routes: dict[str, dict]) -> list[dict]:
    """The entry of each route's next hop (the gateway, or the address itself when
    on-link), with the addresses that go through it."""
    found: dict[tuple, dict] = {}
    for addr, route in routes.items():
        hop = route.get("gateway") or addr
        key = (hop, route.get("oif"))
        if key not in found:
            entry = netlink.neighbour(hop, route.get("oif"))
            found[key] = entry or {"addr": hop, "iface": route.get("oif"), "state": "NONE",
                                   "lladdr": None}
            found[key]["for"] = []
        found[key]["for"].append(addr)
    return list(found.values())


def _safe(read, default):
    """One part of the context: a part that cannot be read is left empty, and the
    watch still ends with its diagnosis."""
    try:
        return read()
    except (OSError, ValueError):
        return default


def gather(flows, ports: Iterable[int], checksum_ifaces: Iterable[str] = ()) -> dict:
    """Everything the rules may ask about this host (see the README, `context`)."""
    flows = list(flows)
    rp = rp_filter_settings()
    routes = {peer: dict(netlink.route_to(peer), rp_filter=rp) for peer in _peers(flows)}
    targets = {addr: netlink.route_to(addr) for addr in _rewrite_targets(flows)}
    ifaces = _flow_ifaces(flows) | {r["oif"] for r in [*routes.values(), *targets.values()]
                                    if r.get("oif")}
    local_ports = set(ports) or {f.local_port for f in flows if f.local_port}
    return {
        "routes": routes,
        "rewrite_routes": targets,
        "neighbours": _neighbours({**routes, **targets}),
        "listeners": _safe(lambda: sockets.listening_sockets(local_ports), {}),
        "sysctls": sockets.sysctls(sockets.SYSCTLS + sockets.iface_sysctls(ifaces)),
        "programs": {i: p for i in sorted(ifaces) if (p := netlink.interface_programs(i))},
        "nat": _safe(firewall.nat_rules, []),
        "offload": {i: netlink.tx_checksum_offload(i) for i in sorted(set(checksum_ifaces))},
        "backends": _safe(lambda: backends(flows), {}),
    }
