"""Integration fixtures: a namespace lab per test module, and pktfate watch run
for real inside one of its namespaces. Everything is removed on the way out,
pass or fail; names carry a per-run prefix."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tracer.lab import Lab

pytestmark = pytest.mark.integration


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="integration tests load BPF programs: run them as root")
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def lab():
    # Unique per run and module, short enough for veth names (15 characters).
    prefix = f"pt{os.getpid() % 10000}{abs(hash(os.urandom(4))) % 100}"
    lab = Lab(prefix)
    try:
        yield lab
    finally:
        lab.down()


class Watch:
    """`pktfate watch --json` in a lab namespace, started and stopped for real."""

    def __init__(self, lab: Lab, host: str, args: list[str], tmp: Path):
        self.lab, self.host, self.args = lab, host, args
        self.ready = tmp / f"ready-{host}-{time.monotonic_ns()}"
        self.proc: subprocess.Popen | None = None
        self.stdout = self.stderr = ""

    def start(self) -> Watch:
        argv = [sys.executable, "-m", "tracer", "watch", "--json",
                "--ready-file", str(self.ready), *self.args]
        self.proc = subprocess.Popen(self.lab.exec_argv(self.host, argv), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 90
        while not self.ready.exists():
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                raise AssertionError(f"watch ended before it was ready: {err}")
            if time.monotonic() > deadline:
                raise AssertionError("watch was not ready within 90 s")
            time.sleep(0.05)
        return self

    def stop(self, sig: int = signal.SIGINT) -> list[dict]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.stdout, self.stderr = self.proc.communicate(timeout=120)
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=30)


@pytest.fixture
def watch(lab, tmp_path):
    started: list[Watch] = []

    def start(*args: str, host: str = "server") -> Watch:
        w = Watch(lab, host, list(args), tmp_path).start()
        started.append(w)
        return w

    yield start
    for w in started:
        w.kill()
    subprocess.run([sys.executable, "-m", "tracer", "cleanup"], capture_output=True)


def matching(lines: list[dict], **want) -> list[dict]:
    """Lines whose fields include every item of `want` (partial-dict match)."""
    return [line for line in lines if all(line.get(k) == v for k, v in want.items())]


def diagnosis(lines: list[dict]) -> list[dict]:
    last = lines[-1]
    assert last["kind"] == "diagnosis"
    assert len(matching(lines, kind="diagnosis")) == 1
    return last["findings"]


def pktfate_attachments(lab: Lab, host: str = "server") -> str:
    """What `ip link` and `tc` show of pktfate's in a namespace ('' when nothing)."""
    links = lab.sh(host, "ip -d link show").stdout
    found = [line.strip() for line in links.splitlines() if "xdp" in line or "prog/xdp" in line]
    for ifname in ("eth0", "eth-c", "eth-s"):
        for direction in ("ingress", "egress"):
            proc = lab.sh(host, f"tc filter show dev {ifname} {direction}", check=False)
            found += [line for line in proc.stdout.splitlines() if line.strip()]
        proc = lab.sh(host, f"tc qdisc show dev {ifname}", check=False)
        found += [line for line in proc.stdout.splitlines() if "clsact" in line]
    return "\n".join(found)
