"""`pktfate agent`: the kernel's counts served to Prometheus until a signal, and
an armed deep watch when a watched port fails (trigger.py): `pktfate watch` on
that port, run in the failing namespace for a bounded time, its recording kept
(incidents.py) and its diagnosis logged as one JSON line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from .. import __version__
from ..errors import PktfateError
from ..output.agent_log import findings_fields, incident_fields, log_line
from ..output.metrics import AgentCollector, AgentState, LabelCaps
from .counters import AgentLimits
from .incidents import IncidentStore
from .trigger import Alarm, Trigger, TriggerPolicy

DEFAULT_LISTEN = ("127.0.0.1", 9542)
DEFAULT_INCIDENTS = Path("/var/lib/pktfate/incidents")


@dataclass(frozen=True)
class AgentConfig:
    listen: tuple[str, int] = DEFAULT_LISTEN
    ports: tuple[int, ...] = ()  # --watch-port
    policy: TriggerPolicy = field(default_factory=TriggerPolicy)
    watch_duration: float = 20.0  # seconds of an armed watch
    store: IncidentStore = field(default_factory=lambda: IncidentStore(DEFAULT_INCIDENTS))
    limits: AgentLimits = field(default_factory=AgentLimits)
    caps: LabelCaps = field(default_factory=LabelCaps)
    tick: float = 1.0  # seconds between looks at the watched ports
    ready_file: Path | None = None


class ArmedWatch:
    """One `pktfate watch` in a child process, its JSON going to a recording.
    A child, not a thread: the watch owns its signals, and whatever befalls it
    leaves the agent's counting untouched."""

    def __init__(self, alarm: Alarm, netns_path: str | None, own_netns: bool,
                 duration: float, path: Path):
        self.alarm, self.path = alarm, path
        command = [sys.executable, "-m", "pktfate", "watch", "--port", str(alarm.port),
                   "--duration", str(duration), "--json"]
        if not own_netns:
            if netns_path is None:
                raise PktfateError(f"namespace {alarm.netns} has no process left to enter")
            command = ["nsenter", f"--net={netns_path}", "--", *command]
        self._out = open(path, "wb")  # noqa: SIM115 (closed in finish())
        # Its errors to a file, not a pipe: a pipe nobody reads until the end would
        # stop the watch once full.
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 (closed in finish())
        self.process = subprocess.Popen(command, stdout=self._out, stderr=self._err,
                                        stdin=subprocess.DEVNULL)

    def too_big(self, limit: int) -> bool:
        try:
            return self.path.stat().st_size > limit
        except OSError:
            return False

    def stop(self) -> None:
        """End it as Ctrl-C would: it detaches, diagnoses and writes its end."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)

    def finish(self, timeout: float | None = None) -> tuple[int, str]:
        """Its exit status and its last line of standard error. One that has not
        ended within `timeout` of being asked to is killed."""
        try:
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                return -9, f"the watch did not end within {timeout:g} s of Ctrl-C: killed"
            self._err.seek(0)
            lines = self._err.read().decode(errors="replace").strip().splitlines()
            return self.process.returncode, lines[-1] if lines else ""
        finally:
            self._out.close()
            self._err.close()


class Agent:
    def __init__(self, config: AgentConfig, log: TextIO):
        self.config, self.log = config, log
        self.trigger = Trigger(config.policy)
        self.armed: ArmedWatch | None = None

    def run(self, counters, workloads, state: AgentState, stop) -> None:
        own = workloads.own
        while stop.signal is None:
            deadline = time.monotonic() + self.config.tick
            while stop.signal is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.armed is not None:
                self._poll_armed(state, workloads)
            failures = counters.port_failures()
            for alarm in self.trigger.observe(time.monotonic(), failures,
                                              busy=self.armed is not None):
                self._on_alarm(alarm, state, workloads, own)
        if self.armed is not None:
            self.armed.stop()
            self._finish_armed(state, workloads)

    def _on_alarm(self, alarm: Alarm, state: AgentState, workloads, own: int) -> None:
        where = incident_fields(alarm.netns, workloads(alarm.netns), alarm.port, alarm.failures)
        if alarm.suppressed:
            with state.lock:
                state.incidents[(alarm.port, "suppressed")] += 1
            log_line(self.log, "incident-suppressed", **where)
            return
        store = self.config.store
        path = store.new_path(alarm.port, alarm.netns)
        try:
            self.armed = ArmedWatch(alarm, workloads.path_of(alarm.netns), alarm.netns == own,
                                    self.config.watch_duration, path)
        except (PktfateError, OSError) as exc:
            with state.lock:
                state.incidents[(alarm.port, "failed")] += 1
            log_line(self.log, "incident-failed", **where, error=str(exc))
            return
        log_line(self.log, "watch-armed", **where, recording=str(path),
                 duration=self.config.watch_duration)
        store.prune(writing=path)

    def _poll_armed(self, state: AgentState, workloads) -> None:
        armed = self.armed
        assert armed is not None
        if armed.too_big(self.config.store.file_bytes):
            armed.stop()
        if armed.process.poll() is not None:
            self._finish_armed(state, workloads)

    def _finish_armed(self, state: AgentState, workloads) -> None:
        from ..watch import diagnose_recording

        armed, self.armed = self.armed, None
        assert armed is not None
        status, error = armed.finish(timeout=120)
        alarm = armed.alarm
        where = incident_fields(alarm.netns, workloads(alarm.netns), alarm.port, alarm.failures)
        try:
            if status != 0:
                raise PktfateError(error or f"the watch ended with status {status}")
            with open(armed.path, "rb") as stream:
                findings, stats = diagnose_recording(stream)
        except (PktfateError, OSError, ValueError) as exc:
            with state.lock:
                state.incidents[(alarm.port, "failed")] += 1
            log_line(self.log, "incident-failed", **where, recording=str(armed.path),
                     error=str(exc))
            return
        with state.lock:
            state.incidents[(alarm.port, "recorded")] += 1
            state.events_lost += sum(stats.lost.values())
            if findings:
                state.findings[findings[0].cause] += 1
        log_line(self.log, "incident", **where, recording=str(armed.path),
                 **findings_fields(findings))
        self.config.store.prune()


def run_agent(config: AgentConfig, log: TextIO) -> int:
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.process_collector import ProcessCollector

    from ..host.workloads import Workloads, pods_by_uid
    from ..kernel.discovery import environment, probe_kernel
    from ..kernel.ksyms import KernelSymbols
    from ..session import Stop, require_root
    from .counters import AgentCounters

    require_root("agent", "BPF")
    if config.ports:
        try:
            config.store.prepare()
        except OSError as exc:
            raise PktfateError(f"cannot create the incident folder {config.store.folder}: "
                               f"{exc.strerror}") from exc
    kernel = probe_kernel()
    symbols = KernelSymbols.load()
    # The DaemonSet gives the node's name (spec.nodeName); else the hostname.
    node = os.environ.get("PKTFATE_NODE_NAME") or os.uname().nodename
    workloads = Workloads(pod_names=pods_by_uid(node))
    workloads.refresh()
    from ..attach.objects import bcc_version

    state = AgentState(__version__, environment(bcc_version()))
    with Stop() as stop, AgentCounters(kernel, config.ports, config.limits,
                                       kernel.drop_reason_name,
                                       lambda addr: symbols.locate(addr)[0]) as counters:
        registry = CollectorRegistry()
        registry.register(AgentCollector(counters.read, workloads, state, config.caps))
        ProcessCollector(registry=registry)
        host, port = config.listen
        try:
            server, _thread = start_http_server(port, host, registry)
        except OSError as exc:
            raise PktfateError(f"cannot listen on {host}:{port}: {exc.strerror}; choose "
                               "another with --listen") from exc
        try:
            log_line(log, "start", version=__version__, listen=f"{host}:{port}",
                     watch_ports=list(config.ports), tracepoints=counters.tracepoints,
                     bpf_object=counters.how, incidents=str(config.store.folder))
            if config.ready_file:
                config.ready_file.write_text(f"{os.getpid()}\n")
            Agent(config, log).run(counters, workloads, state, stop)
        finally:
            server.shutdown()
            server.server_close()
            if config.ready_file:
                config.ready_file.unlink(missing_ok=True)
    log_line(log, "stop")
    return 0
