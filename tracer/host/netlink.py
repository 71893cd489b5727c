"""Netlink look-ups of this network namespace, read only: its interfaces, its
addresses, its route to a peer, an interface's transmit checksum offload."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from ..config import WatchConfig
from ..errors import PktfateError

_ARPHRD_ETHER = 1
_ARPHRD_LOOPBACK = 772
_IFF_UP = 0x1


def pyroute2():
    try:
        import pyroute2
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise PktfateError("pyroute2 is not installed: run 'sudo make setup'") from exc
    return pyroute2


@dataclass
class Interface:
    index: int
    name: str
    up: bool
    ethernet: bool  # has an Ethernet header the XDP and tc parsers expect
    xdp_prog_id: int
    kind: str = ""  # IFLA_INFO_KIND: "veth", "bridge"... ("" for a physical NIC)


def list_interfaces() -> list[Interface]:
    """Interfaces of the current network namespace."""
    with pyroute2().IPRoute() as ipr:
        return [interface_of(link) for link in ipr.get_links()]


def interface_of(link) -> Interface:
    xdp = link.get_attr("IFLA_XDP")
    prog_id = (xdp.get_attr("IFLA_XDP_PROG_ID") or 0) if xdp else 0
    info = link.get_attr("IFLA_LINKINFO")
    return Interface(
        index=link["index"],
        name=link.get_attr("IFLA_IFNAME"),
        up=bool(link["flags"] & _IFF_UP),
        ethernet=link["ifi_type"] in (_ARPHRD_ETHER, _ARPHRD_LOOPBACK),
        xdp_prog_id=prog_id,
        kind=(info.get_attr("IFLA_INFO_KIND") or "") if info else "",
    )


def select_interfaces(config: WatchConfig) -> list[Interface]:
    """The interfaces to attach to: those named, else every one that is up but lo."""
    links = list_interfaces()
    if config.ifaces:
        by_name = {link.name: link for link in links}
        unknown = [name for name in config.ifaces if name not in by_name]
        if unknown:
            raise PktfateError(
                f"no interface named {', '.join(unknown)} in this network namespace "
                "(see 'ip link')"
            )
        return [by_name[name] for name in config.ifaces]
    return [link for link in links if link.up and link.name != "lo"]


def resolve_ifname(index: int) -> str:
    try:
        return socket.if_indextoname(index)
    except OSError:
        return f"if{index}"


def local_addresses() -> set[str]:
    """Every address configured in the current network namespace."""
    with pyroute2().IPRoute() as ipr:
        return {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr()
                if a.get_attr("IFA_ADDRESS")}


def route_back(addr: str) -> dict:
    """How this namespace would route to `addr`: {'oif': name} ({} if no route)."""
    with pyroute2().IPRoute() as ipr:
        try:
            routes = ipr.route("get", dst=addr)
        except Exception:  # no route: pyroute2 raises NetlinkError (ENETUNREACH)
            return {}
    oif = routes[0].get_attr("RTA_OIF") if routes else None
    return {"oif": resolve_ifname(oif)} if oif else {}


TX_CHECKSUM_FEATURES = ("tx-checksum-ipv4", "tx-checksum-ip-generic", "tx-checksum-ipv6")


def tx_checksum_offload(ifname: str) -> bool | None:
    """Whether `ifname` leaves transmit checksums to offload (ethtool's 'tx'
    features, over netlink); None when the features cannot be read."""
    try:
        from pyroute2.ethtool import Ethtool

        ethtool = Ethtool()
    except Exception:
        return None
    try:
        features = ethtool.get_features(ifname).features
        return any(features[name].enable for name in TX_CHECKSUM_FEATURES if name in features)
    except Exception:
        return None
    finally:
        ethtool.close()


NUD_STATES = {0x01: "INCOMPLETE", 0x02: "REACHABLE", 0x04: "STALE", 0x08: "DELAY",
              0x10: "PROBE", 0x20: "FAILED", 0x40: "NOARP", 0x80: "PERMANENT"}


def route_to(addr: str) -> dict:
    """The route toward `addr`: outgoing interface, gateway (None when on-link),
    source address and MTU (the route's own, else the interface's); {} if none."""
    with pyroute2().IPRoute() as ipr:
        try:
            routes = ipr.route("get", dst=addr)
        except Exception:  # no route: NetlinkError (ENETUNREACH)
            return {}
        if not routes:
            return {}
        route = routes[0]
        oif = route.get_attr("RTA_OIF")
        metrics = route.get_attr("RTA_METRICS")
        mtu = metrics.get_attr("RTAX_MTU") if metrics else None
        if not mtu and oif:
            links = ipr.get_links(oif)
            mtu = links[0].get_attr("IFLA_MTU") if links else None
    return {"oif": resolve_ifname(oif) if oif else None, "gateway": route.get_attr("RTA_GATEWAY"),
            "src": route.get_attr("RTA_PREFSRC"), "mtu": mtu}


def neighbour(addr: str, ifname: str | None) -> dict | None:
    """The neighbour entry for `addr` (on `ifname` when given): its state and
    link-layer address, or None when there is none."""
    with pyroute2().IPRoute() as ipr:
        try:
            entries = ipr.get_neighbours(dst=addr)
        except Exception:
            return None
    for entry in entries:
        iface = resolve_ifname(entry["ifindex"])
        if ifname and iface != ifname:
            continue
        state = entry["state"]
        names = [name for bit, name in NUD_STATES.items() if state & bit]
        return {"addr": addr, "iface": iface, "state": "|".join(names) or str(state),
                "lladdr": entry.get_attr("NDA_LLADDR")}
    return None


TC_PARENTS = {"tc-ingress": 0xFFFFFFF2, "tc-egress": 0xFFFFFFF3}  # clsact's two hooks


def interface_programs(ifname: str) -> dict[str, list[dict]]:
    """BPF programs on an interface: its XDP program ({'id', 'name'}) and its tc
    clsact filters (by name: pyroute2 does not decode TCA_BPF_ID). Read after
    pktfate has detached its own, so every one is another tool's."""
    from .bpfobj import program_name

    found: dict[str, list[dict]] = {}
    with pyroute2().IPRoute() as ipr:
        indexes = ipr.link_lookup(ifname=ifname)
        if not indexes:
            return found
        xdp_id = interface_of(ipr.get_links(indexes[0])[0]).xdp_prog_id
        if xdp_id:
            found["xdp"] = [{"id": xdp_id, "name": program_name(xdp_id)}]
        for hook, parent in TC_PARENTS.items():
            try:
                filters = ipr.get_filters(index=indexes[0], parent=parent)
            except Exception:  # no clsact qdisc
                continue
            for flt in filters:
                options = flt.get_attr("TCA_OPTIONS")
                if flt.get_attr("TCA_KIND") == "bpf" and options:
                    found.setdefault(hook, []).append(
                        {"id": None, "name": options.get_attr("TCA_BPF_NAME") or ""})
    return found
