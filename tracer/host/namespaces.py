"""The other network namespaces this host runs (containers, pods, a lab's hosts),
found through their processes and read through /proc/PID/net, never entered:
which one holds an address a port mapping sends packets to, and what listens
there. Read only, and bounded by one pass over /proc."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

LISTEN = "0A"  # include/net/tcp_states.h, as /proc/net/tcp shows it


def netns_inode(pid: str | int, proc: Path = Path("/proc")) -> int | None:
    """The inode number of a process's network namespace ('net:[4026531840]')."""
    try:
        link = os.readlink(proc / str(pid) / "ns" / "net")
    except OSError:
        return None
    digits = link.rpartition("[")[2].rstrip("]")
    return int(digits) if digits.isdigit() else None


def namespaces(proc: Path = Path("/proc")) -> dict[int, int]:
    """Each network namespace some process is in -> one such process (the lowest
    PID), this process's own left out."""
    own = netns_inode("self", proc)
    found: dict[int, int] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        inode = netns_inode(entry.name, proc)
        if inode is not None and inode != own and inode not in found:
            found[inode] = int(entry.name)
    return found


def local_addresses(pid: int, proc: Path = Path("/proc")) -> set[str]:
    """The addresses a namespace holds, read through one of its processes: IPv4's
    local routes (/proc/PID/net/fib_trie) and IPv6's addresses (if_inet6)."""
    found: set[str] = set()
    net = proc / str(pid) / "net"
    try:
        lines = (net / "fib_trie").read_text().splitlines()
    except OSError:
        lines = []
    for previous, line in zip(lines, lines[1:]):
        if line.strip() == "/32 host LOCAL":
            found.add(previous.strip().removeprefix("|-- "))
    try:
        inet6 = (net / "if_inet6").read_text().splitlines()
    except OSError:
        inet6 = []
    for line in inet6:
        fields = line.split()
        if fields and len(fields[0]) == 32:
            found.add(str(ipaddress.IPv6Address(bytes.fromhex(fields[0]))))
    return found


def holder_of(addr: str, proc: Path = Path("/proc"),
              spaces: dict[int, int] | None = None) -> tuple[int, int] | None:
    """(namespace inode, a process in it) of the other namespace on this host that
    holds `addr`; None when none does, or when several do (two container networks
    reusing one range): which of them this host's mapping reaches is not told by
    the address alone. `spaces`: namespaces() already read, for several addresses."""
    wanted = str(ipaddress.ip_address(addr))
    spaces = namespaces(proc) if spaces is None else spaces
    holders = [(inode, pid) for inode, pid in sorted(spaces.items())
               if wanted in local_addresses(pid, proc)]
    return holders[0] if len(holders) == 1 else None


def _address(hex_addr: str) -> str:
    """/proc/net/tcp's address: IPv4 as one little-endian word, IPv6 as four."""
    raw = bytes.fromhex(hex_addr)
    words = [raw[i:i + 4][::-1] for i in range(0, len(raw), 4)]
    packed = b"".join(words)
    return str(ipaddress.ip_address(packed))


def listening(pid: int, port: int, proc: Path = Path("/proc")) -> list[tuple[str, int, int]]:
    """(bound address, accept queue, socket inode) of each TCP socket listening on
    `port` in the namespace of `pid` (/proc/PID/net/tcp and tcp6)."""
    found = []
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / str(pid) / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != LISTEN:
                continue
            addr, _, hex_port = fields[1].partition(":")
            if int(hex_port, 16) != port:
                continue
            queue = int(fields[4].split(":")[1], 16)
            found.append((_address(addr), queue, int(fields[9])))
    return found
