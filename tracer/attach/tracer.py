"""The only module that talks to bcc: compile the BPF programs, attach them (XDP
and tc through attach.hooks, tracepoints through bcc), stream their events from
the ring buffer, and remove exactly what was attached."""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from contextlib import ExitStack, suppress
from typing import Any

from ..config import WatchConfig
from ..decode.raw import (
    HOOKS,
    SETTING_NETNS,
    STAT_AGG_FULL,
    STAT_LOST,
    STAT_SAMPLED,
    STAT_SLOTS,
    RawAggKey,
    RawEvent,
)
from ..errors import PktfateError
from ..host.netlink import Interface, pyroute2, select_interfaces
from ..kernel.discovery import KernelInfo
from .hooks import AttachReport, tc_attached, xdp_attached
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


class Tracer:
    """Compiled programs, attached; events flow to `on_event` as RawEvents."""

    def __init__(self, config: WatchConfig, kernel: KernelInfo,
                 on_event: Callable[[RawEvent], None]):
        self.config = config
        self.kernel = kernel
        self.on_event = on_event
        self.report = AttachReport()
        self._stack = ExitStack()
        self._bpf: Any = None  # bcc.BPF, once compiled
        self._error: BaseException | None = None
        self._drained = 0

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
        bcc = _bcc()
        interfaces = select_interfaces(self.config)
        try:
            bpf = bcc.BPF(text=render_source(),
                          cflags=compile_flags(self.config.cflags(self.kernel)))
        except Exception as exc:
            raise PktfateError(f"the BPF programs did not compile or load: {exc}") from exc
        self._bpf = bpf
        _release_compiler_memory()
        self._stack.callback(bpf.cleanup)  # detaches the tracepoints bcc attached
        self._fill_filter_maps(bpf)
        bpf["pf_events"].open_ring_buffer(self._on_ring)
        if interfaces:
            self._attach_interfaces(bcc, bpf, interfaces)

    def _fill_filter_maps(self, bpf) -> None:
        settings = bpf["pf_settings"]
        settings[ctypes.c_int(SETTING_NETNS)] = ctypes.c_uint32(
            self.config.watched_netns(self.kernel))
        ports = bpf["pf_ports"]
        for port in self.config.ports:
            ports[ports.Key(port)] = ports.Leaf(1)
        hosts = bpf["pf_hosts"]
        for key in self.config.host_keys():
            hk = hosts.Key()
            for i in range(4):
                hk.a[i] = int.from_bytes(key[4 * i:4 * i + 4], "little")
            hosts[hk] = hosts.Leaf(1)

    def _attach_interfaces(self, bcc, bpf, interfaces: list[Interface]) -> None:
        ipr = self._stack.enter_context(pyroute2().IPRoute())
        state = StateFile(self.kernel.netns)
        self._stack.callback(state.remove)
        xdp_fn = bpf.load_func("pf_xdp", bcc.BPF.XDP) if self.config.xdp else None
        tc_fds = {}
        if self.config.tc:
            tc_fds = {"in": bpf.load_func("pf_tc_ingress", bcc.BPF.SCHED_CLS).fd,
                      "out": bpf.load_func("pf_tc_egress", bcc.BPF.SCHED_CLS).fd}
        for iface in interfaces:
            if not iface.ethernet:
                self.report.skipped.append(f"{iface.name}: not an Ethernet device")
                continue
            if xdp_fn is not None:
                self._stack.enter_context(
                    xdp_attached(ipr, iface, xdp_fn.fd, state, self.report))
            if tc_fds:
                self._stack.enter_context(tc_attached(ipr, iface, tc_fds, state, self.report))

    def _on_ring(self, _ctx, data, size) -> int:
        # ctypes would print and swallow an exception raised here: keep it, and
        # stop consuming (a negative return), so that drain() raises it.
        if self._error is not None:
            return -1
        try:
            if size >= ctypes.sizeof(RawEvent):
                # Decoded before this returns: the ring's memory is read in place.
                self.on_event(ctypes.cast(data, ctypes.POINTER(RawEvent)).contents)
        except BaseException as exc:
            self._error = exc
            return -1
        self._drained += 1
        # Under a flood the ring never empties: stop after a budget (this event is
        # consumed already) so that the caller gets to look at its signals.
        return -1 if self._drained >= DRAIN_BUDGET else 0

    def drain(self) -> int:
        """Deliver the events waiting in the ring buffer, DRAIN_BUDGET at most; raise
        what the event handler raised (a closed output pipe, for instance). Returns
        how many were delivered."""
        self._drained = 0
        self._bpf.ring_buffer_consume()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self._drained

    def stats(self) -> dict:
        """Per hook, summed over CPUs: events that matched the filter, events lost
        (no room in the ring buffer), events sampled out; and the events the
        aggregation table had no room for."""
        table = self._bpf["pf_stats"]
        totals = [sum(table[ctypes.c_int(slot)]) for slot in range(STAT_SLOTS)]
        return {"matched": {name: totals[num] for num, name in HOOKS.items()},
                "lost": {name: totals[STAT_LOST + num] for num, name in HOOKS.items()},
                "sampled": {name: totals[STAT_SAMPLED + num] for num, name in HOOKS.items()},
                "agg_full": totals[STAT_AGG_FULL]}

    def aggregates(self) -> list[tuple[RawAggKey, int]]:
        """The kernel's exact counts, per hook, reason and flow."""
        return [(RawAggKey.from_buffer_copy(bytes(key)), int(sum(per_cpu)))
                for key, per_cpu in self._bpf["pf_agg"].items()]


