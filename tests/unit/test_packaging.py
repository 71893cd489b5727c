"""pktfate installs as a package of its own: the wheel holds the import package
pktfate with every BPF source as package data, and neither the tests nor the
bench; the version comes from one place."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pktfate

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_holds_every_bpf_source_and_no_tests(built_wheel):
    names = set(zipfile.ZipFile(built_wheel).namelist())
    sources = {p.name for p in (ROOT / "bpf").iterdir() if p.suffix in (".c", ".h")}
    assert sources, "no BPF sources in the checkout?"
    assert {f"pktfate/bpf/{name}" for name in sources} <= names
    for room in ("cli", "kernel", "attach", "decode", "correlate", "diagnosis", "output",
                 "probe", "host", "lab"):
        assert f"pktfate/{room}/__init__.py" in names, room
    tops = {name.split("/")[0] for name in names}
    assert tops == {"pktfate", f"pktfate-{pktfate.__version__}.dist-info"}, tops


def test_the_version_comes_from_one_place(built_wheel):
    assert built_wheel.name.startswith(f"pktfate-{pktfate.__version__}-")
    assert "version =" not in (ROOT / "pyproject.toml").read_text().split("[tool")[0]
