"""A three-host lab in network namespaces: client, router, server.

  client eth0 10.0.1.2 --- eth-c 10.0.1.1 [router] 10.0.2.1 eth-s --- eth0 10.0.2.2 server

The router forwards with the kernel (ip_forward) or with the naive user-space
forwarder (tracer/forwarder.py) that reproduces the checksum incident. Names
carry a prefix so that several labs (the tests') can coexist; every process the
lab starts is recorded by PID and ended by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import PktfateError
from .scenarios import ADDRESSES, HOSTS, INTERFACES, SCENARIOS, Scenario

STATE_DIR = Path("/run/pktfate")
PROJECT_ROOT = Path(__file__).resolve().parent.parent

MACS = {  # fixed, so that the user-space forwarder knows its neighbours
    ("client", "eth0"): "02:00:0a:00:01:02",
    ("router", "eth-c"): "02:00:0a:00:01:01",
    ("router", "eth-s"): "02:00:0a:00:02:01",
    ("server", "eth0"): "02:00:0a:00:02:02",
}
STALE_SERVER_MAC = "02:00:0a:00:02:99"  # the server's address before a NIC swap, say


def run_command(cmd: list[str], check: bool = True,
                timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run a command of the lab's (or the bench's); a failure is a one-line error."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise PktfateError(f"lab: '{' '.join(cmd)}' failed: "
                           f"{(proc.stderr or proc.stdout).strip()}")
    return proc


@dataclass
class Lab:
    prefix: str = "pfl"
    pids: list[int] = field(default_factory=list)
    scenario: str | None = None
    hosts: tuple[str, ...] = HOSTS  # the hosts this lab drives
    interfaces: dict[str, str] = field(default_factory=lambda: dict(INTERFACES))

    def __post_init__(self) -> None:
        # Each lab's backend namespace carries its prefix, as its hosts' do.
        if self.interfaces.get("backend_ns") in (None, INTERFACES["backend_ns"]):
            self.interfaces["backend_ns"] = f"{self.prefix}-backend"

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    @property
    def state_file(self) -> Path:
        return STATE_DIR / f"lab-{self.prefix}.json"

    # -------------------------------------------------------------- commands

    def exec_argv(self, host: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns(host), *argv]

    def sh(self, host: str, command: str, check: bool = True,
           timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.exec_argv(host, ["sh", "-c", command]), capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise PktfateError(f"lab: on {host}: '{command}' failed: "
                               f"{(proc.stderr or proc.stdout).strip()}")
        return proc

    def spawn(self, host: str, argv: list[str]) -> subprocess.Popen:
        proc = subprocess.Popen(self.exec_argv(host, argv), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        self.pids.append(proc.pid)
        self._save()
        return proc

    # -------------------------------------------------------------- up and down

    def exists(self) -> bool:
        return Path(f"/run/netns/{self.ns('router')}").exists()

    def up(self, scenario: str = "healthy") -> Lab:
        if scenario not in SCENARIOS:
            raise PktfateError(f"unknown scenario {scenario!r}: one of {', '.join(SCENARIOS)}")
        return self.up_with(SCENARIOS[scenario])

    def up_with(self, scenario: Scenario) -> Lab:
        """Build the lab (again) with a scenario given whole (the fault matrix's)."""
        if os.geteuid() != 0:
            raise PktfateError("the lab needs root: run it with sudo")
        if self.exists():
            self.down()
        try:
            self._build()
            self.apply(scenario)
        except BaseException:
            self.down()
            raise
        return self

    def build(self) -> Lab:
        """The namespaces, links and addresses alone, with no scenario: stand-ins for
        the Vagrant lab's machines before they are provisioned."""
        if self.exists():
            self.down()
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        return self

    def _build(self) -> None:
        for host in ("client", "router", "server"):
            run_command(["ip", "netns", "add", self.ns(host)])
            self.sh(host, "ip link set lo up")
        self._wire("client", "eth0", "router", "eth-c")
        self._wire("server", "eth0", "router", "eth-s")
        a = ADDRESSES
        self.sh("client", f"ip addr add {a['client_ip']}/24 dev eth0 && ip link set eth0 up && "
                          f"ip route add default via {a['router_client_ip']}")
        self.sh("server", f"ip addr add {a['server_ip']}/24 dev eth0 && ip link set eth0 up && "
                          f"ip route add default via {a['router_server_ip']}")
        self.sh("router", f"ip addr add {a['router_client_ip']}/24 dev eth-c && "
                          f"ip addr add {a['router_server_ip']}/24 dev eth-s && "
                          "ip link set eth-c up && ip link set eth-s up")
        # IPv6 beside IPv4 (nodad: usable at once, no duplicate-address wait).
        self.sh("client", f"ip -6 addr add {a['client_ip6']}/64 dev eth0 nodad && "
                          f"ip -6 route add default via {a['router_client_ip6']}")
        self.sh("server", f"ip -6 addr add {a['server_ip6']}/64 dev eth0 nodad && "
                          f"ip -6 route add default via {a['router_server_ip6']}")
        self.sh("router", f"ip -6 addr add {a['router_client_ip6']}/64 dev eth-c nodad && "
                          f"ip -6 addr add {a['router_server_ip6']}/64 dev eth-s nodad")
        self._save()

    def _wire(self, host_a: str, if_a: str, host_b: str, if_b: str) -> None:
        # Temporary root-namespace names: short (15 characters at most) and unique.
        stem = f"{self.prefix}{host_a[0]}{host_b[0]}"
        tmp_a, tmp_b = f"{stem}a", f"{stem}b"
        run_command(["ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b])
        for tmp, host, ifname in ((tmp_a, host_a, if_a), (tmp_b, host_b, if_b)):
            run_command(["ip", "link", "set", tmp, "netns", self.ns(host)])
            self.sh(host, f"ip link set {tmp} name {ifname} && "
                          f"ip link set {ifname} address {MACS[(host, ifname)]}")

    def commands(self, scenario: Scenario, section: str, host: str) -> list[str]:
        return scenario.commands(section, host, self.interfaces)

    def apply(self, scenario: Scenario, router_mode: str | None = None) -> None:
        """Set the router's mode, then each host's setup, then its services."""
        self.scenario = scenario.name
        if "router" in self.hosts:
            self._router_mode(router_mode or scenario.router)
        Path(ADDRESSES["www"]).mkdir(parents=True, exist_ok=True)  # setups may write there
        for host in self.hosts:
            for command in self.commands(scenario, "setup", host):
                if command.startswith("ip netns add "):
                    # A namespace made inside `ip netns exec` vanishes with it (its
                    # mount stays in that command's private mount namespace).
                    run_command(shlex.split(command))
                else:
                    self.sh(host, command)
        for host in self.hosts:
            for command in self.commands(scenario, "services", host):
                self.spawn(host, shlex.split(command))
        self._wait_for_services(scenario)
        self._save()

    def neighbour_mac(self, host: str) -> str:
        """The MAC address the router sends to for `host` ("client" or "server")."""
        return MACS[(host, "eth0")]

    def _router_mode(self, mode: str) -> None:
        """kernel: ip_forward. userspace: the naive forwarder. userspace-stale-ip: the
        same, leaving the IP header checksum stale after the TTL decrement.
        userspace-stale-arp: the same, sending to the server's old MAC address."""
        forward = "1" if mode == "kernel" else "0"
        self.sh("router", f"sysctl -qw net.ipv4.ip_forward={forward} "
                          f"net.ipv6.conf.all.forwarding={forward}")
        if mode.startswith("userspace"):
            ready = STATE_DIR / f"lab-{self.prefix}-forwarder.ready"
            ready.unlink(missing_ok=True)
            a, names = ADDRESSES, self.interfaces
            server_mac = STALE_SERVER_MAC if mode == "userspace-stale-arp" else \
                self.neighbour_mac("server")
            argv = [sys.executable, "-m", "pktfate.lab.forwarder",
                    "--link", f"{names['router_client_if']},{a['client_net']},"
                              f"{self.neighbour_mac('client')}",
                    "--link", f"{names['router_server_if']},{a['server_net']},{server_mac}",
                    "--ready-file", str(ready)]
            if mode == "userspace-stale-ip":
                argv.append("--stale-ip-checksum")
            self.spawn("router", ["env", f"PYTHONPATH={PROJECT_ROOT}", *argv])
            wait_for(lambda: ready.exists(), "the user-space forwarder to start")

    def _wait_for_services(self, scenario: Scenario) -> None:
        for host in self.hosts:
            for condition in self.commands(scenario, "ready", host):
                wait_for(lambda c=condition, h=host: self.sh(h, c, check=False).returncode == 0,
                      f"'{condition}' on {host}", timeout=60)
        if "server" in self.hosts and scenario.commands("services", "server") and \
                not scenario.ready.get("server"):  # its own readiness test says more
            port = scenario.listening_port
            # As long as a ready condition: a listener that loads a BPF program
            # (cgroup-filter) compiles it first, half a minute under emulation.
            wait_for(lambda: f":{port} " in self.sh("server", f"ss -Hltun 'sport = :{port}'",
                                                 check=False).stdout + " ",
                  f"the server to listen on :{port}", timeout=60)

    def down(self) -> None:
        """Stop what the lab started (by PID) and delete its namespaces."""
        self.stop_processes()
        for host in HOSTS:
            run_command(["ip", "netns", "del", self.ns(host)], check=False)
        run_command(["ip", "netns", "del", self.interfaces["backend_ns"]], check=False)
        self._forget()

    def stop_processes(self) -> None:
        """End every process the lab started, by PID."""
        self._load()
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
        for pid in self.pids:
            _reap(pid)
        self.pids = []

    def _forget(self) -> None:
        for marker in STATE_DIR.glob(f"lab-{self.prefix}-*.ready"):
            marker.unlink(missing_ok=True)
        self.state_file.unlink(missing_ok=True)

    # -------------------------------------------------------------- state

    def _save(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps({"pids": self.pids, "scenario": self.scenario}))

    def _load(self) -> None:
        try:
            record = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return
        self.pids = sorted(set(self.pids) | set(record.get("pids", [])))
        self.scenario = self.scenario or record.get("scenario")


def _reap(pid: int, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child (another pktfate started it)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            done = 0
        if done:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def wait_for(condition, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise PktfateError(f"lab: timed out waiting for {what}")
