"""What the running kernel offers pktfate: tracefs, tracepoints, BTF offsets and
the names of its drop reasons. Everything kernel-specific is read here, from the
kernel itself; nothing is taken from a table in the code. No bcc needed.
"""

from __future__ import annotations

import os
import re
import subprocess
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import PktfateError
from .btf import BTF, BTFError

TRACEFS_CANDIDATES = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))

# Tracepoints pktfate can use, by the define that switches each one on.
TRACEPOINTS = {
    "PF_HAVE_KFREE_SKB": "skb/kfree_skb",
    "PF_HAVE_TCP_BAD_CSUM": "tcp/tcp_bad_csum",
    "PF_HAVE_TCP_SEND_RESET": "tcp/tcp_send_reset",
    "PF_HAVE_ICMP_SEND": "icmp/icmp_send",
    "PF_HAVE_SOCK_STATE": "sock/inet_sock_set_state",
    "PF_HAVE_CONSUME_SKB": "skb/consume_skb",
}
# Tracepoints that fire for packets of every flow, ours or not (every packet the
# host frees or consumes, every ICMP error it sends, every bad TCP checksum):
# where the kernel has their BTF-typed raw form, that one is attached instead. It
# skips the trace record the regular form fills before the program runs, and the
# program reads the skb's fields with plain loads (the verifier knows the skb's
# type) rather than helper calls: what a refused packet costs (bpf/kfree_skb.c).
RAW_TRACEPOINTS = ("skb/kfree_skb", "skb/consume_skb", "icmp/icmp_send", "tcp/tcp_bad_csum")

# What the BPF programs name by BTF id, as (kind, name): bpf_rdonly_cast (a kfunc,
# 6.2) lets the raw tracepoints read packet headers as these structs, with plain
# loads instead of a helper call (bpf/skb.h). All or none.
BTF_IDS = (("func", "bpf_rdonly_cast"), ("struct", "iphdr"), ("struct", "udphdr"),
           ("struct", "tcphdr"))

# Kernel struct members the BPF programs read, as (define, struct, member path).
BTF_FIELDS = (
    ("PF_OFF_SKB_HEAD", "sk_buff", "head"),
    ("PF_OFF_SKB_NETWORK_HEADER", "sk_buff", "network_header"),
    ("PF_OFF_SKB_DEV", "sk_buff", "dev"),
    ("PF_OFF_SKB_SK", "sk_buff", "sk"),
    ("PF_OFF_SKB_PROTOCOL", "sk_buff", "protocol"),
    ("PF_OFF_SKB_IIF", "sk_buff", "skb_iif"),  # the agent's direction (bpf/agent.c)
    ("PF_OFF_DEV_NET", "net_device", "nd_net.net"),
    ("PF_OFF_DEV_IFINDEX", "net_device", "ifindex"),
    ("PF_OFF_NET_INUM", "net", "ns.inum"),
    ("PF_OFF_SK_NET", "sock", "__sk_common.skc_net.net"),
)

_FIELD_RE = re.compile(r"^\s*field:(?P<decl>[^;]+);", re.M)
_SYMBOLIC_RE = re.compile(r"\{\s*(-?\d+)\s*,\s*\"([A-Za-z0-9_]+)\"\s*\}")


def parse_format_fields(text: str) -> frozenset[str]:
    """Field names declared in a tracepoint's format file."""
    names = set()
    for match in _FIELD_RE.finditer(text):
        decl = match.group("decl").strip()
        name = re.sub(r"\[.*\]$", "", decl.split()[-1]).lstrip("*")
        if not name.startswith("common_"):
            names.add(name)
    return frozenset(names)


def parse_print_symbolic(text: str) -> dict[int, str]:
    """Value -> name pairs of the __print_symbolic() list in a format file."""
    _, _, fmt = text.partition("__print_symbolic")
    return {int(num): name for num, name in _SYMBOLIC_RE.findall(fmt)}


def strip_enum_prefix(values: dict[int, str], prefix: str) -> dict[int, str]:
    return {v: (n[len(prefix):] if n.startswith(prefix) else n) for v, n in values.items()}


def find_tracefs(mount: bool = True) -> Path:
    """The tracefs mount point, mounting it where it is missing."""
    for path in TRACEFS_CANDIDATES:
        if (path / "events").is_dir():
            return path
    if mount:
        target = TRACEFS_CANDIDATES[0]
        proc = subprocess.run(
            ["mount", "-t", "tracefs", "tracefs", str(target)],
            capture_output=True,
            text=True,
        )
        if proc.returncode == 0 and (target / "events").is_dir():
            return target
    raise PktfateError(
        "tracefs is not mounted and could not be mounted: "
        "run 'mount -t tracefs tracefs /sys/kernel/tracing' as root, then retry"
    )


def netns_inode(pid: str = "self") -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


@dataclass(frozen=True)
class KernelInfo:
    """Facts about the running kernel that shape what gets compiled and how
    events are named."""

    tracefs: Path
    tracepoints: dict[str, frozenset[str]]  # "skb/kfree_skb" -> its field names
    offsets: dict[str, int]  # PF_OFF_* -> byte offset
    drop_reasons: dict[int, str]
    rst_reasons: dict[int, str]
    netns: int
    missing: tuple[str, ...] = field(default=())
    # "skb/kfree_skb" -> (BTF id of btf_trace_kfree_skb, its arguments' types),
    # where the kernel has BTF-typed raw tracepoints for it (BTF.raw_tracepoint)
    raw_tracepoints: dict[str, tuple[int, tuple[str, ...]]] = field(default_factory=dict)
    # BTF_IDS' names -> their BTF ids in this kernel; empty where one is missing
    btf_ids: dict[str, int] = field(default_factory=dict)

    def has(self, tracepoint: str) -> bool:
        return tracepoint in self.tracepoints

    def traces_socketless_resets(self) -> bool:
        """Whether tcp:tcp_send_reset fires for the RSTs the kernel sends with no
        socket (to a port nothing listens on). It does where its addresses are the
        packet's own, in sockaddr form (no sport field): kernels before that took them
        from the socket and traced only resets that had one (Debian's 6.1; the
        suite run inside it found no rst-sent event)."""
        fields = self.tracepoints.get("tcp/tcp_send_reset")
        return fields is not None and "sport" not in fields

    def drop_reason_name(self, code: int) -> str | None:
        """The kernel's name for a drop reason. Reasons of subsystems (the high
        16 bits) are named by subsystem and code, as the kernel lists them. None
        on a kernel without drop reasons (before 5.17): the diagnosis then names
        drops by the function that freed them (diagnosis/locations.py)."""
        if not self.drop_reasons:
            return None
        if code in self.drop_reasons:
            return self.drop_reasons[code]
        if code >> 16:
            return f"SUBSYS_{code >> 16}_{code & 0xFFFF}"
        return f"REASON_{code}"


def _read_tracepoints(tracefs: Path) -> dict[str, frozenset[str]]:
    found = {}
    for name in TRACEPOINTS.values():
        fmt = tracefs / "events" / name / "format"
        try:
            found[name] = parse_format_fields(fmt.read_text())
        except OSError:
            continue
    return found


def _drop_reasons(btf: BTF | None, tracefs: Path) -> dict[int, str]:
    if btf is not None:
        try:
            return strip_enum_prefix(btf.enum("skb_drop_reason"), "SKB_DROP_REASON_")
        except BTFError:
            pass
    try:
        text = (tracefs / "events/skb/kfree_skb/format").read_text()
    except OSError:
        return {}
    return parse_print_symbolic(text)


def kernel_has_btf() -> bool:
    try:
        BTF.from_file()
    except BTFError:
        return False
    return True


def drop_reason_table() -> dict[int, str]:
    """The running kernel's drop reasons, without mounting anything: BTF first,
    else the kfree_skb format file of a mounted tracefs."""
    try:
        btf: BTF | None = BTF.from_file()
    except BTFError:
        btf = None
    tracefs = next((p for p in TRACEFS_CANDIDATES if (p / "events").is_dir()),
                   TRACEFS_CANDIDATES[0])
    return _drop_reasons(btf, tracefs)


def _btf_offsets() -> tuple[BTF | None, dict[str, int], str]:
    """BTF, the offsets of BTF_FIELDS (0 where unknown), and why they are missing."""
    zeros = {define: 0 for define, _, _ in BTF_FIELDS}
    try:
        btf = BTF.from_file()
    except BTFError as exc:
        return None, zeros, str(exc)
    offsets = {}
    for define, struct_name, path in BTF_FIELDS:
        try:
            offsets[define] = btf.field(struct_name, path).offset
        except BTFError as exc:
            return btf, zeros, str(exc)
    return btf, offsets, ""


def _btf_ids(btf: BTF | None) -> dict[str, int]:
    if btf is None:
        return {}
    try:
        return {name: btf.func_id(name) if kind == "func" else btf.struct_id(name)
                for kind, name in BTF_IDS}
    except BTFError:
        return {}  # an older kernel: the programs read headers through a helper


def probe_kernel(mount_tracefs: bool = True) -> KernelInfo:
    """Read everything pktfate needs to know about this kernel."""
    tracefs = find_tracefs(mount=mount_tracefs)
    missing = []
    tracepoints = _read_tracepoints(tracefs)
    for name in TRACEPOINTS.values():
        if name not in tracepoints:
            missing.append(f"tracepoint {name}")
    btf, offsets, why = _btf_offsets()
    if why:
        # Without offsets no tracepoint can read an sk_buff: go on with XDP and tc.
        missing.append(f"kernel BTF ({why}): no drops, resets or socket states, "
                       "only what XDP and tc see")
        tracepoints = {}
    drop_reasons = _drop_reasons(btf, tracefs)
    if not drop_reasons:
        missing.append("drop reasons (kernel older than 5.17): drops are shown without a reason")
    try:
        rst_reasons = strip_enum_prefix(btf.enum("sk_rst_reason"), "SK_RST_REASON_") \
            if btf else {}
    except BTFError:
        rst_reasons = {}
    raw = {}
    for name in RAW_TRACEPOINTS:
        if btf is not None and name in tracepoints:
            with suppress(BTFError):
                raw[name] = btf.raw_tracepoint(name.split("/", 1)[1])
    return KernelInfo(
        tracefs=tracefs,
        tracepoints=tracepoints,
        offsets=offsets,
        drop_reasons=drop_reasons,
        rst_reasons=rst_reasons,
        netns=netns_inode(),
        missing=tuple(missing),
        raw_tracepoints=raw,
        btf_ids=_btf_ids(btf),
    )


def environment(bcc_version: str | None = None) -> dict[str, str]:
    """What this machine offers pktfate, for `pktfate --version`: the kernel, bcc
    and BTF (with whether the kernel names its drop reasons). `bcc_version`: bcc's
    version known already (the agent's, read without importing bcc, whose
    compiler is a hundred MB of a long-running process's memory)."""
    import platform

    found = {"kernel": platform.release()}
    if bcc_version is not None:
        found["bcc"] = bcc_version
    else:
        _bcc_importable(found)
    try:
        btf = BTF.from_file()
    except BTFError as exc:
        found["BTF"] = f"none ({exc})"
        return found
    try:
        reasons = len(btf.enum("skb_drop_reason"))
        found["BTF"] = f"present; {reasons} drop reasons (enum skb_drop_reason)"
    except BTFError:
        found["BTF"] = "present; no drop reasons (kernel older than 5.17)"
    return found


def _bcc_importable(found: dict[str, str]) -> None:
    try:
        from importlib.metadata import PackageNotFoundError, version

        import bcc  # noqa: F401 (only asked whether it imports)

        try:
            found["bcc"] = version("bcc")
        except PackageNotFoundError:
            found["bcc"] = "importable (version unknown)"
    except ImportError:
        found["bcc"] = "not importable: install python3-bpfcc (sh scripts/setup.sh)"
