"""Integration fixtures: a namespace lab per test module, and pktfate watch run
for real inside one of its namespaces. Everything is removed on the way out,
pass or fail; names carry a per-run prefix."""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
from pathlib import Path

import pytest

from pktfate import __version__
from pktfate.kernel import bpfsys
from pktfate.lab.namespaces import Lab
from pktfate.lab.runner import READY_WAIT, WatchProcess, pktfate_argv

pytestmark = pytest.mark.integration


def pytest_collection_modifyitems(items):
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


@pytest.fixture
def watch(lab, tmp_path):
    """Start `pktfate watch --json ARGS` on a lab host and wait until it is ready;
    every watch a test started is killed (if still running) and cleaned up after."""
    started: list[WatchProcess] = []

    def start(*args: str, host: str = "server", json_out: bool = True) -> WatchProcess:
        w = WatchProcess(list(args), prefix=lab.exec_argv(host, []), workdir=tmp_path,
                         json_out=json_out)
        started.append(w)
        return w.start()

    yield start
    for w in started:
        w.kill()
    subprocess.run(pktfate_argv("cleanup"), capture_output=True)


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


@contextlib.contextmanager
def flood_pairs(tag: str, first_net: int):
    """Two veth pairs for a flood (bench/flood.py): the watched one and another, on
    10.FIRST.0.x and 10.FIRST+1.0.x, removed on the way out."""
    from bench.flood import VethPair

    tag = f"{tag}{os.getpid() % 10000}"
    watched, other = VethPair(f"{tag}w", first_net), VethPair(f"{tag}o", first_net + 1)
    try:
        yield watched.up(), other.up()
    finally:
        watched.down()
        other.down()


def still_loaded(prog_ids: set[int]) -> set[int]:
    """Which of these programs the kernel still has (an attached program is held by
    its attachment, so none left means nothing left attached anywhere)."""
    return prog_ids & set(bpfsys.prog_ids())


def wait_for_file(path, proc: subprocess.Popen, timeout: float = READY_WAIT) -> None:
    """Until a watch run by hand (not by the `watch` fixture) writes its ready file."""
    import time

    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, "pktfate ended before it was ready"
        assert time.monotonic() < deadline, "pktfate was not ready in time"
        time.sleep(0.05)


def podman_run(*args: str) -> list[str]:
    """`podman run` as this machine lets it run: with runc (its cgroups are hybrid,
    v1 controllers beside v2, which crun refuses) and rlimits within the host's
    own (podman raises them past the hard limit by default, which this sandbox
    refuses). On a usual host plain `podman run` does."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return ["podman", "--runtime", "runc", "run", "--ulimit", f"nofile=1024:{hard}",
            "--ulimit", "nproc=4096:4096", *args]


@pytest.fixture(scope="session")
def agent_image():
    """The image, built here by deploy/build-image.sh under a tag of the test's own,
    removed after (the base it made stays: it is the next build's cache)."""
    tag = f"localhost/pktfate-test:{__version__}"
    script = Path(__file__).resolve().parents[2] / "deploy" / "build-image.sh"
    built = subprocess.run(["sh", str(script), tag], capture_output=True, text=True,
                           timeout=1800)
    assert built.returncode == 0, built.stderr[-3000:]
    assert built.stdout.strip() == tag
    try:
        yield tag
    finally:
        subprocess.run(["podman", "rmi", "-f", tag], capture_output=True, timeout=120)
