"""Read-only looks at this namespace's TCP listeners and the settings that decide
what happens to SYNs, taken at the end of a watch for the diagnosis."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

TCP_TABLES = (Path("/proc/self/net/tcp"), Path("/proc/self/net/tcp6"))
LISTEN, SYN_RECV = "0A", "03"  # include/net/tcp_states.h, as /proc/net/tcp shows them
SYSCTLS = ("net/ipv4/tcp_syncookies", "net/ipv4/tcp_max_syn_backlog", "net/core/somaxconn",
           "net/ipv4/ip_forward", "net/netfilter/nf_conntrack_tcp_loose",
           "net/ipv4/icmp_echo_ignore_all", "net/netfilter/nf_conntrack_count",
           "net/netfilter/nf_conntrack_max")


def parse_tcp_table(text: str, ports: Iterable[int]) -> dict[str, dict[str, int]]:
    """Per watched local port: half-open connections (SYN-RECV) and the accept
    queue of its listeners (rx_queue of a LISTEN row)."""
    wanted = set(ports)
    found: dict[str, dict[str, int]] = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 5:
            continue
        port = int(fields[1].rsplit(":", 1)[1], 16)
        if wanted and port not in wanted:
            continue
        entry = found.setdefault(str(port), {"half_open": 0, "accept_queue": 0,
                                             "listening": 0})
        if fields[3] == SYN_RECV:
            entry["half_open"] += 1
        elif fields[3] == LISTEN:
            entry["listening"] += 1
            entry["accept_queue"] += int(fields[4].split(":")[1], 16)
    return found


def listeners(ports: Iterable[int], tables=TCP_TABLES) -> dict[str, dict[str, int]]:
    ports = tuple(ports)
    merged: dict[str, dict[str, int]] = {}
    for path in tables:
        try:
            text = path.read_text()
        except OSError:
            continue
        for port, entry in parse_tcp_table(text, ports).items():
            into = merged.setdefault(port, dict.fromkeys(entry, 0))
            for key, value in entry.items():
                into[key] += value
    return merged


def sysctls(names: Iterable[str] = SYSCTLS, root: Path = Path("/proc/sys")) -> dict[str, int]:
    found = {}
    for name in names:
        try:
            found[name.replace("/", ".")] = int((root / name).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return found
