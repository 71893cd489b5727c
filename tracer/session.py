"""One watch of the kernel, shared by `pktfate watch` and `pktfate probe`: the
root check, what the kernel offers, the interfaces, the decoder, the signals that
stop it, the attached tracer and its drain loop. Events reach the caller decoded,
a drain's worth at a time."""

from __future__ import annotations

import gc
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from .config import WatchConfig
from .decode.events import Decoded, Decoder, WatchStats
from .errors import PktfateError
from .model.kinds import Location

if TYPE_CHECKING:
    from .attach.tracer import Tracer
    from .kernel.discovery import KernelInfo
    from .kernel.ksyms import KernelSymbols

DRAIN_INTERVAL = 0.01  # seconds between ring-buffer drains (no wake-ups per event)
# Records taken through decoding, correlation and output together: each stage
# loops over a pass, and a pass small enough that its events are still in the CPU's
# cache for the next stage costs a third less per event here than a whole drain
# of thousands (a flood replayed: 3.3 us per event in passes of 100, 4.7 in 4,096).
PASS_RECORDS = 128


class Stop:
    """Set by SIGINT, SIGTERM or SIGHUP; the loop ends and everything detaches."""

    def __init__(self):
        self.signal: int | None = None
        self._previous = {}

    def __enter__(self) -> Stop:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame) -> None:
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class IfNames:
    def __init__(self):
        self._cache: dict[int, str] = {}

    def __call__(self, index: int) -> str:
        if index not in self._cache:
            try:
                self._cache[index] = socket.if_indextoname(index)
            except OSError:
                self._cache[index] = f"if{index}"
        return self._cache[index]


def _locator(symbols: KernelSymbols) -> Callable[[int], Location]:
    """A code address -> its Location, remembered: a flood repeats a few places."""
    known: dict[int, Location] = {}

    def locate(addr: int) -> Location:
        location = known.get(addr)
        if location is None:
            location = known[addr] = Location(*symbols.locate(addr))
        return location
    return locate


def _settle_garbage_collector() -> None:
    """What start-up made (modules, the loaded object, the kernel's tables) lives
    as long as the watch: frozen, the collector stops walking it on every full
    collection. Events make short-lived objects by the thousand a second; a
    younger generation ten times the default size collects them in fewer passes."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(7000, older, oldest)


def require_root(command: str, why: str) -> None:
    if os.geteuid() != 0:
        raise PktfateError(f"pktfate {command} needs root ({why}): run it as root or with sudo")


class WatchSession:
    """Use as a context: everything is attached inside it and detached on the way
    out, however it is left."""

    def __init__(self, config: WatchConfig, on_batch: Callable[[list[Decoded]], None],
                 command: str = "watch", why_root: str = "BPF and netlink",
                 on_records: Callable[[list[Decoded], list[tuple]], None] | None = None):
        self.config = config
        self.on_batch = on_batch  # each drain's events, decoded, in order
        # And with the ring's records they were decoded from (the pcapng writer
        # takes the packets' own bytes from them), where something wants them.
        self.on_raw = on_records
        self.command, self.why_root = command, why_root
        self.stop = Stop()
        # Set by __enter__: a session is used only inside its `with`.
        self.tracer: Tracer
        self.kernel: KernelInfo
        self.decoder: Decoder
        self.leftovers: list[dict] = []

    def __enter__(self) -> WatchSession:
        # Imported here: the rest of the package imports without bcc or root.
        from .attach.state import leftover_states
        from .attach.tracer import Tracer
        from .host.netlink import select_interfaces
        from .kernel.discovery import probe_kernel
        from .kernel.ksyms import KernelSymbols

        require_root(self.command, self.why_root)
        self.kernel = probe_kernel()
        select_interfaces(self.config)  # unknown interfaces fail before anything loads
        self.leftovers = leftover_states()
        boot_offset = time.time() - time.clock_gettime(time.CLOCK_MONOTONIC)
        decoder = Decoder(self.kernel.drop_reason_name, _locator(KernelSymbols.load()), IfNames(),
                          self.kernel.rst_reasons, boot_offset, local_netns=self.kernel.netns)
        decode, deliver, raw = decoder.decode_batch, self.on_batch, self.on_raw

        def on_records(records: list[tuple]) -> None:
            for start in range(0, len(records), PASS_RECORDS):
                chunk = records[start:start + PASS_RECORDS]
                decoded = decode(chunk)
                deliver(decoded)
                if raw is not None:
                    raw(decoded, chunk)

        self.decoder = decoder
        self.stop.__enter__()
        try:
            self.tracer = Tracer(self.config, self.kernel, on_records)
            self.tracer.__enter__()
        except BaseException:
            self.stop.__exit__(None, None, None)
            raise
        _settle_garbage_collector()
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            self.tracer.__exit__(*exc_info)
        finally:
            self.stop.__exit__(*exc_info)

    @property
    def stopped(self) -> bool:
        return self.stop.signal is not None

    def drain(self) -> int:
        return self.tracer.drain()

    def run(self, deadline: float | None = None,
            done: Callable[[], bool] | None = None,
            after_drain: Callable[[], None] | None = None) -> None:
        """Drain until a signal, the deadline (time.monotonic()) or done();
        after_drain() after each drain (the output's flush)."""
        while not self.stopped and (deadline is None or time.monotonic() < deadline):
            time.sleep(DRAIN_INTERVAL)
            self.drain()
            if after_drain is not None:
                after_drain()
            if done is not None and done():
                return

    def final_stats(self) -> WatchStats:
        """One last bounded drain, then the kernel's counters and exact counts."""
        # Once stopped, one bounded drain: the time to stop does not grow with
        # the flood that may be going on.
        stopping = self.drain()
        return replace(self.tracer.stats(), stopping_events=stopping,
                       kernel_counts=tuple(self.decoder.aggregate(key, count)
                                           for key, count in self.tracer.aggregates()))
