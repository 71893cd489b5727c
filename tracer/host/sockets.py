"""Read-only looks at this namespace's TCP listeners and the settings that decide
what happens to SYNs, taken at the end of a watch for the diagnosis: each
listening socket on the watched ports (sock_diag), its queues, the processes that
hold it, their cgroup and systemd unit, and the cgroup's BPF programs."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterable
from pathlib import Path

from . import bpfobj

TCPF_LISTEN, TCPF_SYN_RECV = 1 << 10, 1 << 3  # include/net/tcp_states.h
_UNIT = re.compile(r"([^/]+\.(?:service|scope))(?:/|$)")
TCP_TABLES = (Path("/proc/self/net/tcp"), Path("/proc/self/net/tcp6"))
LISTEN, SYN_RECV = "0A", "03"  # include/net/tcp_states.h, as /proc/net/tcp shows them
SYSCTLS = ("net/ipv4/tcp_syncookies", "net/ipv6/conf/all/forwarding",
           "net/ipv4/tcp_max_syn_backlog", "net/core/somaxconn",
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


def iface_sysctls(ifaces: Iterable[str]) -> tuple[str, ...]:
    """The per-interface settings that decide a packet's fate there."""
    return tuple(f"net/ipv4/conf/{i}/{name}" for i in sorted(set(ifaces))
                 for name in ("forwarding", "rp_filter"))


def sysctls(names: Iterable[str] = SYSCTLS, root: Path = Path("/proc/sys")) -> dict[str, int]:
    found = {}
    for name in names:
        try:
            found[name.replace("/", ".")] = int((root / name).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return found


def unit_of(cgroup: str) -> str | None:
    """The systemd unit a cgroup path belongs to ('/system.slice/nginx.service' ->
    'nginx.service'), the innermost one; None outside systemd's units."""
    units = _UNIT.findall(cgroup)
    return units[-1] if units else None


def cgroup_of(pid: int, proc: Path = Path("/proc")) -> str | None:
    """The process's cgroup v2 path (the '0::' line of /proc/PID/cgroup)."""
    try:
        lines = (proc / str(pid) / "cgroup").read_text().splitlines()
    except OSError:
        return None
    return next((line[3:] for line in lines if line.startswith("0::")), None)


def _ancestors(proc: Path) -> list[str]:
    """'self', then the PIDs of this process's parent, its parent... up to init."""
    chain, pid = ["self"], "self"
    while len(chain) < 64:
        try:
            status = (proc / pid / "status").read_text()
        except OSError:
            break
        pid = next((line.split()[1] for line in status.splitlines()
                    if line.startswith("PPid:")), "0")
        if pid in ("0", "1"):
            break
        chain.append(pid)
    return [*chain, "1"]


def cgroup2_mount(proc: Path = Path("/proc")) -> str | None:
    """Where the cgroup v2 hierarchy can be reached (/sys/fs/cgroup, or .../unified).
    `ip netns exec` gives its command a /sys of its own without it: then through
    the root of the nearest ancestor that sees it (/proc/PID/root/...)."""
    for pid in _ancestors(proc):
        try:
            lines = (proc / pid / "mountinfo").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            left, _, right = line.partition(" - ")
            fields = left.split()
            if right.split()[:1] == ["cgroup2"] and len(fields) > 4:
                root = "" if pid == "self" else str(proc / pid / "root")
                try:
                    if Path(root + fields[4]).is_dir():
                        return root + fields[4]
                except OSError:  # another process's root: not ours to walk
                    continue
    return None


def socket_owners(inodes: set[int], proc: Path = Path("/proc")) -> dict[int, list[int]]:
    """Socket inode -> PIDs of the processes holding it, from /proc/*/fd."""
    owners: dict[int, list[int]] = {}
    wanted = {f"socket:[{inode}]": inode for inode in inodes}
    if not wanted:
        return owners
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = os.listdir(entry / "fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(entry / "fd" / fd)
            except OSError:
                continue
            if target in wanted:
                owners.setdefault(wanted[target], []).append(int(entry.name))
    return owners


def process(pid: int, mount: str | None) -> dict:
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        comm = "?"
    cgroup = cgroup_of(pid)
    programs = bpfobj.cgroup_programs(mount + cgroup) if mount and cgroup else []
    return {"pid": pid, "comm": comm, "cgroup": cgroup, "unit": unit_of(cgroup or ""),
            "cgroup_programs": programs}


def _diag_sockets() -> list[dict]:
    """TCP sockets listening or half-open in this namespace, from sock_diag."""
    from .netlink import pyroute2

    found = []
    with pyroute2().DiagSocket() as diag:
        diag.bind()
        for family in (socket.AF_INET, socket.AF_INET6):
            for msg in diag.get_sock_stats(family=family, states=TCPF_LISTEN | TCPF_SYN_RECV):
                found.append({"state": msg["idiag_state"], "addr": msg["idiag_src"],
                              "port": msg["idiag_sport"], "queue": msg["idiag_rqueue"],
                              "backlog": msg["idiag_wqueue"], "inode": msg["idiag_inode"]})
    return found


def listening_sockets(ports: Iterable[int], processes: bool = True) -> dict[str, dict]:
    """Per port: the listening sockets (address, accept queue and its limit, the
    processes holding each, their cgroup, unit and cgroup BPF programs), the
    half-open connections, and the totals the rules read (listening,
    accept_queue, half_open). Falls back to /proc/net/tcp without sock_diag."""
    wanted = set(ports)
    try:
        rows = _diag_sockets()
    except Exception:  # no sock_diag (module missing): the totals alone
        return listeners(wanted)
    rows = [r for r in rows if not wanted or r["port"] in wanted]
    listen = [r for r in rows if r["state"] == 10]
    owners = socket_owners({r["inode"] for r in listen if r["inode"]}) if processes else {}
    mount = cgroup2_mount()
    found: dict[str, dict] = {}
    for row in rows:
        entry = found.setdefault(str(row["port"]), {"listening": 0, "accept_queue": 0,
                                                    "half_open": 0, "sockets": []})
        if row["state"] != 10:
            entry["half_open"] += 1
            continue
        entry["listening"] += 1
        entry["accept_queue"] += row["queue"]
        entry["sockets"].append({
            "addr": row["addr"], "accept_queue": row["queue"], "backlog": row["backlog"],
            "processes": [process(pid, mount) for pid in owners.get(row["inode"], [])]})
    return found
