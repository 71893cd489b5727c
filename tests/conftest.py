"""Fixtures and reporting for every test, unit and integration."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from importlib.util import find_spec
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")


def pytest_configure(config):
    # Registered here, not in pyproject.toml: that file keys the kernel matrix's image.
    config.addinivalue_line("markers", "vm: the three-VM lab under qemu (make vm-test); "
                            "the kernel matrix's smoke subset runs in make test")


def pytest_terminal_summary(terminalreporter):
    """Print what tests recorded with record_property("report", ...): measurements a
    test states without asserting them (the rate a flood reached on this machine)."""
    reports = [(report.nodeid, value)
               for key in ("passed", "failed")
               for report in terminalreporter.stats.get(key, [])
               for name, value in getattr(report, "user_properties", ())
               if name == "report" and report.when == "call"]
    if reports:
        terminalreporter.section("measured, not asserted")
        for nodeid, value in reports:
            terminalreporter.write_line(f"{nodeid.split('::')[-1]}: {value}")



@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory) -> Path:
    """pktfate's wheel, built once per test session from this checkout, offline: the
    build backend is the virtualenv's own (make setup-dev installs it), never one
    fetched for an isolated build, so make unit needs no network."""
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                           "--no-build-isolation", "--no-index",
                           "--wheel-dir", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = out.glob("pktfate-*.whl")
    return wheel


@pytest.fixture(scope="session")
def packaged_apart(built_wheel):
    """A world-readable temporary folder holding pktfate (from its wheel) and its
    pure-Python dependencies, nothing else: whoever can or cannot read the checkout
    (it may live under /root, mode 700, where nobody reaches neither it nor its
    virtualenv) runs pktfate from it with PYTHONPATH."""
    if os.geteuid() != 0:
        pytest.skip("installing for another user needs root")
    target = Path(tempfile.mkdtemp(prefix="pktfate-apart-"))
    try:
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                               "--no-index", "--target", str(target), str(built_wheel)],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        for dependency in ("click", "pyroute2", "prometheus_client"):
            spec = find_spec(dependency)
            assert spec and spec.submodule_search_locations, dependency
            shutil.copytree(list(spec.submodule_search_locations)[0], target / dependency)
        for path in [target, *target.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield target
    finally:
        shutil.rmtree(target, ignore_errors=True)


@pytest.fixture(scope="session")
def as_nobody(packaged_apart):
    """argv that runs pktfate as the unprivileged user nobody."""
    interpreter = os.path.realpath(sys.executable)  # the venv's base, world-readable
    return [*NOBODY, "env", f"PYTHONPATH={packaged_apart}", "PYTHONDONTWRITEBYTECODE=1",
            interpreter, "-s", "-m", "pktfate"]


@pytest.fixture(scope="session")
def without_bcc(packaged_apart):
    """argv that runs pktfate, as root, where bcc cannot be imported: the system's
    interpreter without its site packages (where the distro's bcc lives), as a
    virtualenv made without --system-site-packages would be."""
    interpreter = os.path.realpath(sys.executable)
    return ["env", f"PYTHONPATH={packaged_apart}", "PYTHONDONTWRITEBYTECODE=1",
            interpreter, "-S", "-m", "pktfate"]
