"""Floods for the bench and the tests: bench/flood.c, compiled once per checkout,
sending UDP from one network namespace of a veth pair to the other."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from pktfate.errors import PktfateError
from pktfate.host.counters import parse_snmp
from pktfate.lab.namespaces import run_command

SOURCE = Path(__file__).resolve().parent.parent / "bench" / "flood.c"
# Built beside its source: /run (where it was) is mounted noexec on Debian's
# guests (the suite run inside 6.1 could not start it), the checkout never is.
BINARY = SOURCE.parent / ".build" / "flood"


def flood_binary() -> Path:
    """The compiled flood tool, rebuilt when its source is newer."""
    if not BINARY.exists() or BINARY.stat().st_mtime < SOURCE.stat().st_mtime:
        BINARY.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["cc", "-O2", "-o", str(BINARY), str(SOURCE)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise PktfateError(f"cannot build {SOURCE}: {proc.stderr.strip()}")
    return BINARY


@dataclass
class VethPair:
    """Two namespaces, PREFIX-a (10.N.0.1) and PREFIX-b (10.N.0.2), one veth between."""

    prefix: str
    subnet: int = 77  # 10.<subnet>.0.0/24

    @property
    def a(self) -> str:
        return f"{self.prefix}-a"

    @property
    def b(self) -> str:
        return f"{self.prefix}-b"

    @property
    def addr_a(self) -> str:
        return f"10.{self.subnet}.0.1"

    @property
    def addr_b(self) -> str:
        return f"10.{self.subnet}.0.2"

    def up(self) -> VethPair:
        self.down()
        try:
            for ns in (self.a, self.b):
                _run("ip", "netns", "add", ns)
                _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "link", "add", f"{self.prefix}a", "type", "veth", "peer", "name",
                 f"{self.prefix}b")
            for side, ns, addr in (("a", self.a, self.addr_a), ("b", self.b, self.addr_b)):
                _run("ip", "link", "set", f"{self.prefix}{side}", "netns", ns)
                _run("ip", "-n", ns, "link", "set", f"{self.prefix}{side}", "name", "eth0")
                _run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
                _run("ip", "-n", ns, "link", "set", "eth0", "up")
            _run("ip", "netns", "exec", self.a, "ping", "-c", "1", "-W", "2", self.addr_b)
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        for ns in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def exec_argv(self, ns: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]

    def flood_argv(self, port: int, pps: int, seconds: float, flows: int = 1,
                   reverse: bool = False) -> list[str]:
        """From a to b; `reverse`: from b to a (out of the side tools watch)."""
        ns, src, dst = (self.b, self.addr_b, self.addr_a) if reverse else (
            self.a, self.addr_a, self.addr_b)
        return self.exec_argv(ns, [str(flood_binary()), src, dst, str(port), str(pps),
                                   str(seconds), str(flows)])

    def flood(self, port: int, pps: int, seconds: float, flows: int = 1,
              reverse: bool = False) -> int:
        """Send for `seconds`; returns the datagrams sent."""
        out = _run(*self.flood_argv(port, pps, seconds, flows, reverse), timeout=seconds + 30)
        return int(out.split()[-1])

    def udp_no_ports(self) -> int:
        """The receiving namespace's UdpNoPorts counter."""
        return parse_snmp(_run("ip", "netns", "exec", self.b, "cat", "/proc/net/snmp"))[
            "UdpNoPorts"]


def _run(*argv: str, timeout: float = 30) -> str:
    return run_command(list(argv), timeout=timeout).stdout
