"""`pktfate explain` reads user input: every kind of bad recording ends in one
line and status 2, never a traceback; what a newer version adds is ignored."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pktfate.decode.recording import MAX_LINE_BYTES
from pktfate.errors import PktfateError

from ..readme import status_of
from .recorded import SERVER, Recorder, event_json


def _good_lines() -> list[str]:
    rec = Recorder()
    rec.ping(2)
    rec.syn(3, drop={"reason": "TCP_CSUM", "location": "tcp_v4_rcv+0x1a"})
    lines = [{"kind": "start", "version": "0.1.0", "local_addrs": [SERVER], "ports": [80]}]
    lines += [event_json(ev) for ev in rec.events]
    lines.append({"kind": "stats", "matched": {"xdp": 5}, "lost": {}, "sampled": {},
                  "kernel_counts": [], "agg_full": 0, "flows_evicted": 0})
    lines.append({"kind": "counters", "delta": {"TcpInCsumErrors": 3}, "firewall": [],
                  "routes": {}, "offload": {}})
    return [json.dumps(line) for line in lines]


def _explain(data: bytes, tmp_path) -> subprocess.CompletedProcess:
    path = tmp_path / "run.jsonl"
    path.write_bytes(data)
    return subprocess.run([sys.executable, "-m", "pktfate", "explain", "--json", str(path)],
                          capture_output=True, text=True, timeout=60)


def _text(lines: list[str]) -> bytes:
    return "".join(line + "\n" for line in lines).encode()


def _with(lines: list[str], index: int, **changes) -> list[str]:
    obj = json.loads(lines[index])
    obj.update(changes)
    return lines[:index] + [json.dumps(obj)] + lines[index + 1:]


def test_a_good_recording_replays(tmp_path):
    proc = _explain(_text(_good_lines()), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["findings"][0]["cause"] == \
        "tcp-bad-checksum"


def test_a_newer_versions_additions_are_ignored(tmp_path):
    lines = _good_lines()
    lines = _with(lines, 0, version="9.0.0", new_field={"x": 1})
    lines = _with(lines, 3, flow_label=17)  # a packet field this version does not know
    lines.insert(2, json.dumps({"kind": "future-kind", "anything": [1, 2]}))
    proc = _explain(_text(lines), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["findings"][0]["cause"] == \
        "tcp-bad-checksum"


def _cut_in_the_middle(lines: list[str]) -> bytes:
    data = _text(lines)
    return data[: len(data) - len(lines[-1]) // 2 - 1]


def _huge_line(_lines) -> bytes:
    return b'{"kind": "start", "pad": "' + b"x" * (MAX_LINE_BYTES + 10)


BAD_RECORDINGS = {
    "binary": (lambda _lines: bytes(range(256)) * 40, "is not text"),
    "utf-16": (lambda lines: "\n".join(lines).encode("utf-16"), "is not text"),
    "empty": (lambda _lines: b"", "no 'start' line"),
    "truncated mid-line": (_cut_in_the_middle, "cut short"),
    "huge line": (_huge_line, "longer than"),
    "JSON but not objects": (lambda _lines: b"[1, 2]\n", "not an object"),
    "ts is a string": (lambda lines: _text(_with(lines, 1, ts="yesterday")),
                       "ts should be"),
    "ports is not a list": (lambda lines: _text(_with(lines, 0, ports=80)),
                            "ports should be a list"),
    "a port is a string": (lambda lines: _text(_with(lines, 0, ports=["80"])),
                           "ports[0] should be an integer"),
    "a packet field is missing": (
        lambda lines: _text(lines[:1] + [json.dumps({k: v for k, v in json.loads(
            lines[1]).items() if k != "src"})] + lines[2:]), "src is missing"),
    "a count is true": (lambda lines: _text(_with(lines, -1, delta={"TcpInCsumErrors": True})),
                        "delta.TcpInCsumErrors should be an integer"),
    "quoted is a list": (lambda lines: _text(_with(lines, 1, quoted=[1])),
                         "quoted should be"),
    "kernel counts are numbers": (
        lambda lines: _text(_with(lines, -2, kernel_counts=[{"hook": "drop"}])),
        "kernel_counts[0].proto is missing"),
    "a packet before start": (lambda lines: _text(lines[1:2] + lines), "before the 'start'"),
    "newer version, changed type": (
        lambda lines: _text(_with(_with(lines, 0, version="9.1"), 1, ttl="64")),
        "newer than this"),
}


@pytest.mark.parametrize("name", sorted(BAD_RECORDINGS))
def test_a_bad_recording_is_one_line_and_status_2(name, tmp_path):
    make, words = BAD_RECORDINGS[name]
    proc = _explain(make(_good_lines()), tmp_path)
    assert proc.returncode == 2, (proc.stdout[-500:], proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("pktfate: error:") and words in lines[0], lines[0]
    assert proc.stdout == ""


@pytest.mark.parametrize(("kind", "words"), [
    ("proc", "cannot be read (Input/output error)"),  # /proc/self/mem: EIO on read
    ("fifo", "is not a regular file"),  # would wait for a writer forever
    ("device", "is not a regular file"),  # /dev/zero: never ends
    ("directory", "Is a directory"),
    ("missing", "No such file"),
])
def test_not_a_recording(kind, words, tmp_path):
    path = {"proc": "/proc/self/mem", "device": "/dev/zero", "directory": str(tmp_path),
            "missing": str(tmp_path / "gone.jsonl")}.get(kind)
    if kind == "fifo":
        path = str(tmp_path / "fifo")
        os.mkfifo(path)
    proc = subprocess.run([sys.executable, "-m", "pktfate", "explain", path],
                          capture_output=True, text=True, timeout=30)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == status_of("not a recording") and len(lines) == 1, proc.stderr
    assert lines[0].startswith("pktfate: error:") and words in lines[0], lines[0]


def test_a_recording_says_where_it_was_made_and_older_ones_still_load():
    import io

    from pktfate.decode.recording import read_recording
    from pktfate.model.host import HostIdentity, InterfaceIdentity

    host = {"hostname": "web1", "machine_id": "0123abcd", "netns": 4026531840,
            "interfaces": [{"name": "lo", "mac": None, "addrs": ["127.0.0.1"]},
                           {"name": "eth0", "mac": "52:54:00:12:34:56",
                            "addrs": [SERVER, "fd00:2::2"]}]}
    lines = _good_lines()
    with_host = [json.dumps(dict(json.loads(lines[0]), host=host))] + lines[1:]

    def start_of(text_lines: list[str]):
        data = io.BytesIO(("\n".join(text_lines) + "\n").encode())
        return read_recording(data, "0.1.0", lambda *_: None)[0]

    assert start_of(with_host).host == HostIdentity(
        "web1", "0123abcd", 4026531840,
        (InterfaceIdentity("lo", None, ("127.0.0.1",)),
         InterfaceIdentity("eth0", "52:54:00:12:34:56", (SERVER, "fd00:2::2"))))
    assert start_of(lines).host is None
    broken = [json.dumps(dict(json.loads(lines[0]), host={**host, "netns": "x"}))] + lines[1:]
    with pytest.raises(PktfateError, match="netns"):
        start_of(broken)
