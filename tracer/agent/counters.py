"""The agent's kernel side (bpf/agent.c): compiled, loaded and attached like the
watch's programs (attach/tracer.py, load_programs), then read, never streamed.

Each table is a per-CPU hash: the read sums a key's slots over CPUs. The kernel
only adds, so every count read is at least the one read before it (what a
Prometheus counter must be)."""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from ..config import WatchConfig
from ..decode.raw import port_bitmap
from ..errors import PktfateError
from ..kernel.discovery import KernelInfo
from ..model.fleet import CounterSnapshot, Direction, DropCount, SentCount, SentKind

AGENT_MAIN = "agent.c"
# pf_agent_overflow's slots (bpf/agent.c PF_OVERFLOW_*).
OVERFLOW_DROPS, OVERFLOW_SENT, OVERFLOW_PORTS = 0, 1, 2


class RawDropKey(ctypes.Structure):
    """struct pf_drop_key (bpf/agent.c)."""

    _fields_ = [("location", ctypes.c_uint64), ("netns", ctypes.c_uint32),
                ("reason", ctypes.c_uint32), ("family", ctypes.c_uint8),
                ("proto", ctypes.c_uint8), ("dir", ctypes.c_uint8),
                ("pad", ctypes.c_uint8 * 5)]


class RawSentKey(ctypes.Structure):
    """struct pf_sent_key (bpf/agent.c)."""

    _fields_ = [("netns", ctypes.c_uint32), ("kind", ctypes.c_uint8),
                ("family", ctypes.c_uint8), ("type", ctypes.c_uint8),
                ("code", ctypes.c_uint8)]


class RawPortKey(ctypes.Structure):
    """struct pf_port_key (bpf/agent.c)."""

    _fields_ = [("netns", ctypes.c_uint32), ("port", ctypes.c_uint16),
                ("pad", ctypes.c_uint16)]


@dataclass(frozen=True)
class AgentLimits:
    """How many keys each kernel table holds (its memory is set at load). Past
    them a count is kept in the table's overflow slot, shown as "other"."""

    drop_keys: int = 4096  # namespace x reason x function x protocol x direction
    sent_keys: int = 1024  # namespace x kind x ICMP type and code
    port_keys: int = 1024  # namespace x watched port

    def cflags(self) -> list[str]:
        return [f"-DPF_AGENT_DROP_KEYS={self.drop_keys}",
                f"-DPF_AGENT_SENT_KEYS={self.sent_keys}",
                f"-DPF_AGENT_PORT_KEYS={self.port_keys}"]


def agent_cflags(kernel: KernelInfo, limits: AgentLimits) -> list[str]:
    """The watch's defines for this kernel (which form of each hook, the struct
    offsets: one place decides them, config.py), and the agent's table sizes."""
    return WatchConfig(xdp=False, tc=False, track=False).cflags(kernel) + limits.cflags()


def _sum_u64(values: list[bytes]) -> int:
    return sum(struct.unpack("=Q", v[:8])[0] for v in values)


class AgentCounters:
    """Use as a context: loaded and attached inside it, detached on the way out.
    `name_reason` and `name_function` name a drop's reason code and code address
    (the kernel's own names, as the watch's decoder does)."""

    def __init__(self, kernel: KernelInfo, ports: tuple[int, ...], limits: AgentLimits,
                 name_reason: Callable[[int], str | None],
                 name_function: Callable[[int], str]):
        self.kernel, self.ports, self.limits = kernel, ports, limits
        self._name_reason, self._name_function = name_reason, name_function
        self._stack = ExitStack()
        self._loaded: Any = None  # attach.loader.LoadedObject
        self.how = ""  # "cached" or "compiled"
        self.tracepoints: dict[str, str] = {}  # "skb/kfree_skb" -> how it is attached

    def __enter__(self) -> AgentCounters:
        from ..attach.source import bpf_dir, compile_flags, render_source
        from ..attach.tracer import load_programs

        if not self.kernel.has("skb/kfree_skb"):
            raise PktfateError("this kernel has no skb:kfree_skb tracepoint: the agent counts "
                               "drops there and cannot run without it")
        with self._stack:
            text = render_source(bpf_dir() / AGENT_MAIN)
            flags = compile_flags(agent_cflags(self.kernel, self.limits))
            obj, self._loaded, self.how = load_programs(text, flags, self.kernel)
            self._stack.callback(self._loaded.close)
            for word, bits in port_bitmap(self.ports).items():
                self._loaded.maps["pf_ports"].update(struct.pack("=i", word),
                                                     struct.pack("=Q", bits))
            try:
                self._loaded.attach_tracepoints(obj, self.kernel.tracefs)
            except (OSError, ValueError) as exc:
                raise PktfateError(f"a tracepoint could not be attached: {exc}") from exc
            self.tracepoints = dict(self._loaded.tracepoints)
            self._stack = self._stack.pop_all()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    @property
    def maps(self) -> dict:
        """The loaded tables by name (attach.loader.BpfMap): the bench fills them."""
        return self._loaded.maps

    def _table(self, name: str) -> list[tuple[bytes, int]]:
        table = self._loaded.maps[name]
        return [(key, _sum_u64(table.per_cpu(value))) for key, value in table.items()]

    def port_failures(self) -> dict[tuple[int, int], int]:
        """(namespace, watched port) -> its failures so far: the trigger's one table,
        read alone each second (the drop table can hold thousands of keys)."""
        ports = {}
        for key, count in self._table("pf_port_failures"):
            p = RawPortKey.from_buffer_copy(key)
            ports[(p.netns, p.port)] = count
        return ports

    def read(self) -> CounterSnapshot:
        """Every table, summed over CPUs."""
        drops = []
        for key, count in self._table("pf_drops"):
            k = RawDropKey.from_buffer_copy(key)
            drops.append(DropCount(k.netns, self._name_reason(k.reason),
                                   self._name_function(k.location), k.family, k.proto,
                                   Direction(k.dir) if k.dir in (1, 2) else Direction.LOCAL,
                                   count))
        sent = []
        for key, count in self._table("pf_sent"):
            s = RawSentKey.from_buffer_copy(key)
            sent.append(SentCount(s.netns, SentKind(s.kind), s.family, s.type, s.code, count))
        ports = self.port_failures()
        overflow = self._loaded.maps["pf_agent_overflow"]
        unkeyed = [_sum_u64(overflow.per_cpu(overflow.lookup(struct.pack("=i", slot)) or b""))
                   for slot in (OVERFLOW_DROPS, OVERFLOW_SENT, OVERFLOW_PORTS)]
        return CounterSnapshot(tuple(drops), tuple(sent), drops_unkeyed=unkeyed[0],
                               sent_unkeyed=unkeyed[1], ports_unkeyed=unkeyed[2],
                               port_failures=ports)
