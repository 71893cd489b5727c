"""`pktfate watch` run as a process, for the lab's demo, the tests and the bench:
start it (in a network namespace or here), wait for its ready file, stop it with a
signal, read its JSON lines. Output goes to a file, never to a pipe nobody reads
while traffic flows (a full pipe would hold the watch up)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..errors import PktfateError


def pktfate_argv(*args: str) -> list[str]:
    """pktfate itself, run by the interpreter running now (the virtualenv's)."""
    return [sys.executable, "-m", "pktfate", *args]


# Seconds a watch may take to attach: a warm start takes about a second; a cold one
# compiles the BPF programs, which in a guest emulated without KVM (the kernel
# matrix, make fresh-test) and sharing its CPUs took over 90 s. A bound, not a
# measurement: what a start costs is the bench's.
READY_WAIT = 300


class WatchProcess:
    """One `pktfate watch --json`, started for real and ended by a signal."""

    def __init__(self, args: list[str], prefix: list[str] | None = None,
                 workdir: Path | None = None, json_out: bool = True):
        self.args = list(args)
        self.prefix = list(prefix or [])  # e.g. ["ip", "netns", "exec", NAME]
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="pktfate-watch-"))
        stamp = time.monotonic_ns()
        self.ready = self.workdir / f"ready-{stamp}"
        self.output = self.workdir / f"watch-{stamp}.out"
        self.json_out = json_out
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self.ready_after = 0.0  # seconds from exec to the ready file
        self.stderr = ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def argv(self) -> list[str]:
        return pktfate_argv("watch", *(["--json"] if self.json_out else []),
                            "--ready-file", str(self.ready), *self.args)

    def start(self, timeout: float = READY_WAIT) -> WatchProcess:
        argv = self.argv()
        self.started = time.monotonic()
        with open(self.output, "w") as out:
            self.proc = subprocess.Popen(self.prefix + argv, stdout=out, stderr=subprocess.PIPE,
                                         stdin=subprocess.DEVNULL, text=True)
        deadline = self.started + timeout
        while not self.ready.exists():
            if self.proc.poll() is not None:
                _, self.stderr = self.proc.communicate()
                raise PktfateError(f"{self.argv()[3]} ended before it was ready: "
                                   f"{self.stderr.strip()}")
            if time.monotonic() > deadline:
                self.kill()
                raise PktfateError(f"{self.argv()[3]} was not ready within {timeout:g} s")
            time.sleep(0.01)
        self.ready_after = time.monotonic() - self.started
        return self

    def stop(self, sig: int = signal.SIGINT, timeout: float = 120) -> list[dict]:
        """Signal it, wait for it to end, return its JSON lines (none for a watch
        with human output: read `text`)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        _, self.stderr = self.proc.communicate(timeout=timeout)
        return self.lines() if self.json_out else []

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        _, self.stderr = self.proc.communicate(timeout=timeout)
        return self.proc.returncode

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc else None

    @property
    def text(self) -> str:
        return self.output.read_text()

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]

    def kill(self) -> None:
        """End it without letting it detach (SIGKILL), if it still runs."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=30)


class AgentProcess(WatchProcess):
    """One `pktfate agent` (its log is JSON lines), serving on 127.0.0.1:`port`
    (0: a port free now)."""

    def __init__(self, args: list[str], port: int = 0, workdir: Path | None = None):
        super().__init__(args, workdir=workdir)
        self.port = port or free_port()

    def argv(self) -> list[str]:
        return pktfate_argv("agent", "--listen", f"127.0.0.1:{self.port}",
                            "--ready-file", str(self.ready), *self.args)

    def scrape(self, timeout: float = 10) -> str:
        """Its /metrics page, as Prometheus reads it."""
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics",
                                    timeout=timeout) as answer:
            return answer.read().decode()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
