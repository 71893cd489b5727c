"""The network namespace's own SNMP counters (/proc/net/snmp and netstat), read
at the start and end of a watch: they count what the kernel saw even where no
event reached pktfate, and they back up a diagnosis with the kernel's numbers."""

from __future__ import annotations

from pathlib import Path

SOURCES = (Path("/proc/self/net/snmp"), Path("/proc/self/net/netstat"),
           Path("/proc/self/net/snmp6"))


def parse_snmp(text: str) -> dict[str, int]:
    """'Tcp: A B' / 'Tcp: 1 2' line pairs -> {'TcpA': 1, 'TcpB': 2}; snmp6's
    'Ip6InReceives 12' lines -> {'Ip6InReceives': 12}."""
    counters: dict[str, int] = {}
    lines = text.splitlines()
    if lines and ":" not in lines[0]:
        for line in lines:
            name, _, number = line.partition(" ")
            if number.strip().isdigit():
                counters[name] = int(number)
        return counters
    for header, values in zip(lines[::2], lines[1::2]):
        prefix, _, names = header.partition(":")
        _, _, numbers = values.partition(":")
        for name, number in zip(names.split(), numbers.split()):
            try:
                counters[prefix + name] = int(number)
            except ValueError:
                continue
    return counters


def read_counters(sources=SOURCES) -> dict[str, int]:
    counters: dict[str, int] = {}
    for path in sources:
        try:
            counters.update(parse_snmp(path.read_text()))
        except OSError:
            continue
    return counters


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Counters that moved, by how much. Gauges that fell are left out."""
    return {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0) > 0}
