"""The lab on machines of its own: the Vagrant VMs (or, in the tests, namespaces
standing in for them). Each machine applies its own part of a scenario, from the
same definitions as the namespace lab; its role and interface names come from
the lab addresses it holds. `reset` brings it back to the state it was
provisioned in, recorded then as a baseline.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import PktfateError
from ..host.netlink import tx_checksum_offload
from .namespaces import Lab, run_command
from .scenarios import ADDRESSES, SCENARIOS

# Where each role's baseline is kept (one file per role: the tests' stand-ins share
# a file system).
BASELINE_DIR = Path(os.environ.get("PKTFATE_LAB_STATE", "/var/lib/pktfate"))
ROLE_ADDRESSES = {  # role -> {interface placeholder: the address it holds}
    "client": {"client_if": ADDRESSES["client_ip"]},
    "router": {"router_client_if": ADDRESSES["router_client_ip"],
               "router_server_if": ADDRESSES["router_server_ip"]},
    "server": {"server_if": ADDRESSES["server_ip"]},
}
# Routes a host needs to reach the lab's other network: Vagrant gives the VMs a
# default route through its own NAT interface, not through the router.
LAB_ROUTES = {"client": ("server_net", "router_client_ip"),
              "server": ("client_net", "router_server_ip")}
SPOOFED_ROUTE_LINK = "rpf0"  # the rp-filter scenario's extra link


def addresses_here() -> dict[str, str]:
    """IPv4 address -> interface, on this machine (this network namespace)."""
    proc = run_command(["ip", "-o", "-4", "addr", "show"], check=False)
    found = {}
    for line in proc.stdout.splitlines():
        match = re.match(r"\d+:\s+(\S+)\s+inet\s+([\d.]+)/", line)
        if match:
            found[match.group(2)] = match.group(1)
    return found


def detect_role() -> tuple[str, dict[str, str]]:
    """(role, interface names) from the lab addresses this machine holds."""
    here = addresses_here()
    for role, wanted in ROLE_ADDRESSES.items():
        if all(addr in here for addr in wanted.values()):
            return role, {name: here[addr] for name, addr in wanted.items()}
    lab = ", ".join(a for want in ROLE_ADDRESSES.values() for a in want.values())
    raise PktfateError(f"this machine holds none of the lab's roles (addresses {lab}): "
                       "provision it with vagrant/provision.sh")


@dataclass
class HostLab(Lab):
    """One machine of the lab: runs its commands directly, not in a namespace."""

    role: str = "server"

    @classmethod
    def here(cls) -> HostLab:
        role, names = detect_role()
        lab = cls(prefix=f"host-{role}", hosts=(role,), role=role)
        lab.interfaces.update(names)
        return lab

    def exec_argv(self, host: str, argv: list[str]) -> list[str]:
        if host != self.role:
            raise PktfateError(f"lab: this machine is the {self.role}, not the {host}")
        return argv

    @property
    def baseline_file(self) -> Path:
        return BASELINE_DIR / f"lab-{self.role}-baseline.json"

    def neighbour_mac(self, host: str) -> str:
        """Read from the neighbour table after a ping: VMs have their own MACs."""
        addr = ADDRESSES["client_ip" if host == "client" else "server_ip"]
        self.sh(self.role, f"ping -c 1 -W 1 {addr} >/dev/null", check=False)
        proc = self.sh(self.role, f"ip neigh show {addr}", check=False)
        match = re.search(r"lladdr ([0-9a-f:]{17})", proc.stdout)
        if not match:
            raise PktfateError(f"lab: no MAC address known for the {host} ({addr}): is it up?")
        return match.group(1)

    # -------------------------------------------------------------- baseline

    def provision(self, router_mode: str = "kernel") -> None:
        """Routes between the lab networks, the router's mode, and the baseline."""
        if self.role in LAB_ROUTES:
            net, via = LAB_ROUTES[self.role]
            self.sh(self.role, f"ip route replace {ADDRESSES[net]} via {ADDRESSES[via]}")
        if self.role == "router":
            self.sh(self.role, "sysctl -qw net.ipv4.ip_forward=1")
        self.record_baseline(router_mode)

    def record_baseline(self, router_mode: str) -> None:
        names = [self.interfaces[k] for k in ROLE_ADDRESSES[self.role]]
        sysctls = {key: run_command(["sysctl", "-n", key]).stdout.strip() for key in
                   ["net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter",
                    "net.ipv4.tcp_syncookies",
                    *(f"net.ipv4.conf.{n}.rp_filter" for n in names)]}
        baseline = {
            "router_mode": router_mode,
            "sysctl": sysctls,
            "routes": run_command(["ip", "-4", "route", "show"]).stdout.splitlines(),
            "mtu": {n: Path(f"/sys/class/net/{n}/mtu").read_text().strip() for n in names},
            "tx_offload": {n: tx_checksum_offload(n) for n in names},
        }
        BASELINE_DIR.mkdir(parents=True, exist_ok=True)
        self.baseline_file.write_text(json.dumps(baseline, indent=1) + "\n")

    def _baseline(self) -> dict:
        try:
            return json.loads(self.baseline_file.read_text())
        except (OSError, ValueError) as exc:
            raise PktfateError(f"lab: no baseline for the {self.role} "
                               f"({self.baseline_file}): run vagrant/provision.sh first") from exc

    # -------------------------------------------------------------- scenarios

    def reset(self) -> None:
        """Back to the provisioned state: processes ended, rules flushed, links,
        routes, MTUs, offloads and sysctls as recorded."""
        base = self._baseline()
        self.stop_processes()
        self._forget()
        for chain in ("INPUT", "FORWARD", "OUTPUT"):
            self.sh(self.role, f"iptables -P {chain} ACCEPT", check=False)  # default-deny
            self.sh(self.role, f"iptables -F {chain}", check=False)
            self.sh(self.role, f"ip6tables -F {chain}", check=False)
        self.sh(self.role, "ip6tables -t raw -F PREROUTING", check=False)
        self.sh(self.role, "iptables -t nat -F PREROUTING", check=False)  # port mappings
        self.sh(self.role, "ipset destroy pktfate-banned", check=False)  # ipset-ban
        self.sh(self.role, f"ip netns del {self.interfaces['backend_ns']}", check=False)
        # Scenarios' own neighbour entries and routes (answers-lost, syn-queue-full).
        for name in base["mtu"]:  # the lab's interfaces of this machine
            self.sh(self.role, f"ip neigh flush dev {name} nud permanent", check=False)
        self.sh(self.role, f"ip route del blackhole {ADDRESSES['spoofed_net']}", check=False)
        self.sh(self.role, "sysctl -qw net.netfilter.nf_conntrack_tcp_loose=1", check=False)
        self.sh(self.role, f"ip link del {SPOOFED_ROUTE_LINK}", check=False)
        for name in base["mtu"]:  # another tool's tc filters (tc-egress-drop)
            self.sh(self.role, f"tc qdisc del dev {name} clsact", check=False)
        for name, mtu in base["mtu"].items():
            self.sh(self.role, f"ip link set {name} mtu {mtu}")
            self.sh(self.role, f"ip link set {name} xdpgeneric off", check=False)
        for name, on in base["tx_offload"].items():
            if on is not None:
                self.sh(self.role, f"ethtool -K {name} tx {'on' if on else 'off'}", check=False)
        for key, value in base["sysctl"].items():
            self.sh(self.role, f"sysctl -qw {key}={value}", check=False)
        for route in base["routes"]:
            self.sh(self.role, f"ip route replace {route}", check=False)

    def apply_scenario(self, name: str, router_mode: str | None = None) -> None:
        if name not in SCENARIOS:
            raise PktfateError(f"unknown scenario {name!r}: one of {', '.join(SCENARIOS)}")
        self.reset()
        scenario = SCENARIOS[name]
        self.apply(scenario, router_mode or (scenario.router if scenario.router != "kernel"
                                             else self._baseline()["router_mode"]))
