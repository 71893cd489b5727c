"""When the agent records a deep watch by itself: a watched port's failures (its
packets the kernel dropped, and the RSTs and ICMP errors refusing them, counted
in the kernel per namespace: bpf/agent.c) reach a threshold within a window.
Rate limits keep a flapping service from filling a disk: one incident per
namespace and port per cooldown, and a cap on incidents per hour in all."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

HOUR = 3600.0


@dataclass(frozen=True)
class TriggerPolicy:
    threshold: int = 10  # failures within `window` that arm a watch
    window: float = 30.0  # seconds
    cooldown: float = 300.0  # seconds before the same namespace and port arm again
    max_per_hour: int = 6  # incidents recorded in any hour, all ports together


@dataclass(frozen=True)
class Alarm:
    netns: int
    port: int
    failures: int  # within the window
    suppressed: bool  # over a rate limit: counted, not recorded


@dataclass
class Trigger:
    policy: TriggerPolicy
    _history: dict[tuple[int, int], deque[tuple[float, int]]] = field(default_factory=dict)
    _last: dict[tuple[int, int], float] = field(default_factory=dict)
    _recorded: deque[float] = field(default_factory=deque)

    def observe(self, now: float, totals: dict[tuple[int, int], int],
                busy: bool = False) -> list[Alarm]:
        """The alarms at `now`, given each (namespace, port)'s running total of
        failures; `busy`: a watch is running already, so none is recorded. At
        most one alarm is not suppressed: the port failing most."""
        alarms = []
        for key, total in totals.items():
            failures = self._failures(key, now, total)
            if failures >= self.policy.threshold and now - self._last.get(key, -HOUR * 24) >= \
                    self.policy.cooldown:
                alarms.append((failures, key))
        while self._recorded and now - self._recorded[0] >= HOUR:
            self._recorded.popleft()
        out, recording = [], busy or len(self._recorded) >= self.policy.max_per_hour
        for failures, key in sorted(alarms, reverse=True):
            self._last[key] = now  # counted once per cooldown, recorded or not
            out.append(Alarm(key[0], key[1], failures, suppressed=recording))
            if not recording:
                self._recorded.append(now)
                recording = True
        return out

    def _failures(self, key: tuple[int, int], now: float, total: int) -> int:
        """The failures within the window: now's total less the oldest total
        still inside it (0 at the first sight of a key: its past is unknown)."""
        history = self._history.setdefault(key, deque())
        history.append((now, total))
        while len(history) > 1 and now - history[1][0] >= self.policy.window:
            history.popleft()
        return total - history[0][1]
