"""Where a watch runs: the host's name and machine id, the network namespace and
its interfaces with their addresses and MACs (the start record's `host`)."""

from __future__ import annotations

import socket
from pathlib import Path

from ..model.host import HostIdentity, InterfaceIdentity
from .netlink import pyroute2

MACHINE_ID = Path("/etc/machine-id")


def _machine_id() -> str | None:
    try:
        return MACHINE_ID.read_text().strip() or None
    except OSError:
        return None


def host_identity(netns: int) -> HostIdentity:
    """This namespace's identity, read from netlink (its interfaces, in index order)."""
    with pyroute2().IPRoute() as ipr:
        addrs: dict[int, list[str]] = {}
        for a in ipr.get_addr():
            if a.get_attr("IFA_ADDRESS"):
                addrs.setdefault(a["index"], []).append(a.get_attr("IFA_ADDRESS"))
        interfaces = []
        for link in sorted(ipr.get_links(), key=lambda link: link["index"]):
            mac = link.get_attr("IFLA_ADDRESS")
            interfaces.append(InterfaceIdentity(
                link.get_attr("IFLA_IFNAME"),
                mac if mac and mac != "00:00:00:00:00:00" else None,
                tuple(addrs.get(link["index"], ()))))
    return HostIdentity(socket.gethostname(), _machine_id(), netns, tuple(interfaces))
