"""Compile the BPF programs (bcc, or the cache of what it compiled before), load
them ourselves (attach/loader.py), attach them (XDP and tc through attach.hooks,
tracepoints through perf links), stream their events from the ring buffer, and
remove exactly what was attached."""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable
from contextlib import ExitStack, suppress
from typing import Any

from ..config import KFUNC_MARKS, WatchConfig
from ..decode.events import WatchStats
from ..decode.raw import (
    AGG_HOT_SLOTS,
    RING_STRUCT,
    SETTING_NETNS,
    STAT_AGG_FULL,
    STAT_LOST,
    STAT_SAMPLED,
    STAT_SLOTS,
    RawAggHot,
    RawAggKey,
    merge_agg_counts,
    port_bitmap,
)
from ..errors import PktfateError
from ..host.netlink import Interface, pyroute2, select_interfaces
from ..kernel.bpfsys import BpfError
from ..kernel.discovery import KernelInfo
from ..model.kinds import Hook
from .hooks import AttachReport, tc_attached, xdp_attached
from .loader import LoadedObject, verifier_reason
from .objects import (
    RAW_PROGRAMS,
    CompiledObject,
    bcc_version,
    cache_dir,
    cache_key,
    compile_object,
    forget_cached,
    read_cached,
    write_cached,
)
from .ring import RingReader
from .source import compile_flags, render_source
from .state import StateFile


def _bcc():
    try:
        import bcc
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise PktfateError(
            "bcc is not importable: install python3-bpfcc and use a virtualenv made "
            "with --system-site-packages ('sudo make setup' does both)"
        ) from exc
    return bcc


DRAIN_BUDGET = 4096  # events per drain(): a tenth of a second of Python work or so


def _release_compiler_memory() -> None:
    """Give back to the system the heap LLVM used to compile (tens of MB that glibc
    would otherwise keep for this process's lifetime)."""
    with suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def kfunc_ids(kernel: KernelInfo) -> dict[int, int]:
    """Each kfunc mark the programs may call -> the function's BTF id here."""
    return {mark: kernel.btf_ids[name] for name, mark in KFUNC_MARKS.items()
            if name in kernel.btf_ids}


def raw_btf_ids(kernel: KernelInfo) -> dict[str, int]:
    """The BTF ids of the raw tracepoints the object was compiled for."""
    return {name: btf_id for name, (btf_id, _args) in kernel.raw_tracepoints.items()}


def load_programs(text: str, cflags: list[str],
                  kernel: KernelInfo) -> tuple[CompiledObject, LoadedObject, str]:
    """The compiled object of `text` with `cflags`, loaded, and whether it was
    "cached" or "compiled": from the cache when this exact build was compiled
    before. A cached object the kernel refuses is compiled again. The watch's
    programs and the agent's alike."""
    folder = cache_dir()
    key = cache_key(text, cflags, bcc_version())
    obj = read_cached(folder, key)
    if obj is not None:
        try:
            return obj, LoadedObject.load(obj, raw_btf_ids(kernel), kfunc_ids(kernel)), "cached"
        except Exception:  # whatever is wrong with it, the compiler's copy will do
            forget_cached(folder, key)
    bcc = _bcc()
    try:
        obj = compile_object(bcc, text, cflags)
    except Exception as exc:
        raise PktfateError(f"the BPF programs did not compile: {exc}") from exc
    finally:
        _release_compiler_memory()
    try:
        loaded = LoadedObject.load(obj, raw_btf_ids(kernel), kfunc_ids(kernel))
    except BpfError as exc:
        why = verifier_reason(exc.log)
        raise PktfateError(f"the BPF programs did not load: {exc}"
                           f"{': ' + why if why else ''}") from exc
    write_cached(folder, key, obj)
    return obj, loaded, "compiled"


class Tracer:
    """Compiled programs, attached; events flow to `on_records` in batches, each
    record a tuple in the ring reader's form (decode/raw.py RING_STRUCT)."""

    def __init__(self, config: WatchConfig, kernel: KernelInfo,
                 on_records: Callable[[list[tuple]], None]):
        self.config = config
        self.kernel = kernel
        self.on_records = on_records
        self.report = AttachReport()
        if not config.links:
            self.report.attach.update(xdp="netlink", tc="clsact")
        self._stack = ExitStack()
        self._loaded: Any = None  # LoadedObject
        self._ring: Any = None  # RingReader

    def __enter__(self) -> Tracer:
        try:
            self._stack.__enter__()
            self._start()
        except BaseException:
            self._stack.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self._stack.__exit__(*exc_info)

    def _start(self) -> None:
        interfaces = select_interfaces(self.config)
        obj, loaded = self._load()
        self._loaded = loaded
        self._stack.callback(loaded.close)  # the maps and programs, and what uses them
        self._fill_filter_maps(loaded)
        self._ring = self._open_ring(loaded)
        try:
            loaded.attach_tracepoints(obj, self.kernel.tracefs)
        except (OSError, ValueError) as exc:
            raise PktfateError(f"a tracepoint could not be attached: {exc}") from exc
        regular = {how for how in loaded.tracepoints.values() if how.startswith("perf")}
        if regular:
            self.report.attach["tracepoints"] = sorted(regular)[0]
        for name in RAW_PROGRAMS.values():  # the hooks with two forms: which one
            if name in loaded.tracepoints:
                self.report.attach[name.split("/", 1)[1]] = loaded.tracepoints[name]
        for name, why in loaded.raw_refused.items():
            self.report.skipped.append(f"the BTF raw tracepoint of {name} ({why}): the "
                                       "regular tracepoint instead, costlier per packet")
        if interfaces:
            self._attach_interfaces(loaded, interfaces)

    def _load(self) -> tuple[CompiledObject, LoadedObject]:
        obj, loaded, how = load_programs(render_source(),
                                         compile_flags(self.config.cflags(self.kernel)),
                                         self.kernel)
        self.report.bpf_object = how
        return obj, loaded

    def _open_ring(self, loaded: LoadedObject) -> RingReader:
        events = loaded.maps["pf_events"]
        try:
            ring = RingReader(events.fd, events.spec.max_entries)
        except (OSError, ValueError) as exc:
            raise PktfateError(f"the ring buffer could not be mapped: {exc}") from exc
        self._stack.callback(ring.close)
        return ring

    def _fill_filter_maps(self, loaded: LoadedObject) -> None:
        maps = loaded.maps
        maps["pf_settings"].update(struct.pack("=i", SETTING_NETNS),
                                   struct.pack("=I", self.config.watched_netns(self.kernel)))
        for word, bits in port_bitmap(self.config.ports).items():
            maps["pf_ports"].update(struct.pack("=i", word), struct.pack("=Q", bits))
        for key in self.config.host_keys():
            maps["pf_hosts"].update(key, b"\x01")

    def _attach_interfaces(self, loaded: LoadedObject, interfaces: list[Interface]) -> None:
        ipr = self._stack.enter_context(pyroute2().IPRoute())
        state = StateFile(self.kernel.netns)
        self._stack.callback(state.remove)
        progs = loaded.programs
        xdp_fd = progs.get("pf_xdp") if self.config.xdp else None
        tc_fds = {}
        if self.config.tc:
            tc_fds = {"in": progs["pf_tc_ingress"], "out": progs["pf_tc_egress"]}
        for iface in interfaces:
            if not iface.ethernet:
                self.report.skipped.append(f"{iface.name}: not an Ethernet device")
                continue
            if xdp_fd is not None:
                # Generic XDP only where tc ingress is not there to see the same.
                generic = self.config.xdp_generic or not tc_fds
                self._stack.enter_context(
                    xdp_attached(ipr, iface, xdp_fd, state, self.report, generic))
            if tc_fds:
                self._stack.enter_context(tc_attached(ipr, iface, tc_fds, state, self.report))

    def drain(self) -> int:
        """Deliver the events waiting in the ring buffer, DRAIN_BUDGET at most (under
        a flood the ring never empties: the caller gets to look at its signals in
        between), as one batch; what the handler raises (a closed output pipe, for
        instance) goes up. Returns how many were delivered."""
        records = self._ring.read(RING_STRUCT, DRAIN_BUDGET)
        if records:
            self.on_records(records)
        return len(records)

    def stats(self) -> WatchStats:
        """Per hook, summed over CPUs: events that matched the filter, events lost
        (no room in the ring buffer), events sampled out; and the events the
        aggregation table had no room for."""
        table = self._loaded.maps["pf_stats"]
        totals = []
        for slot in range(STAT_SLOTS):
            value = table.lookup(struct.pack("=i", slot)) or b""
            totals.append(sum(struct.unpack("=Q", v)[0] for v in table.per_cpu(value)))
        return WatchStats(matched={hook: totals[hook] for hook in Hook},
                          lost={hook: totals[STAT_LOST + hook] for hook in Hook},
                          sampled={hook: totals[STAT_SAMPLED + hook] for hook in Hook},
                          agg_full=totals[STAT_AGG_FULL])

    def aggregates(self) -> list[tuple[RawAggKey, int]]:
        """The kernel's exact counts, per hook, reason and flow: pf_agg's, with each
        CPU's hot slots taking over their keys' counts there. A slot that changed
        key while pf_agg was read (its old count just given back there) means a
        second read."""
        table = self._loaded.maps["pf_agg"]
        hot = self._hot_counts()
        for _ in range(3):
            entries = [(key, [struct.unpack("=Q", v)[0] for v in table.per_cpu(value)])
                       for key, value in table.items()]
            again = self._hot_counts()
            if again.keys() == hot.keys():
                hot = again
                break
            hot = again
        return [(RawAggKey.from_buffer_copy(key), count)
                for key, count in merge_agg_counts(hot, entries)]

    def _hot_counts(self) -> dict[tuple[bytes, int], int]:
        """(key, cpu) -> count, from each hook's hot slot on each CPU."""
        table = self._loaded.maps["pf_agg_hot"]
        hot = {}
        for slot in range(AGG_HOT_SLOTS):
            for cpu, value in enumerate(table.per_cpu(table.lookup(struct.pack("=i", slot))
                                                      or b"")):
                entry = RawAggHot.from_buffer_copy(value)
                if entry.key.hook:
                    hot[(bytes(entry.key), cpu)] = entry.count
        return hot
