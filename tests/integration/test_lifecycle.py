"""Nothing of pktfate's stays attached, however a watch ends; bad input and
missing privileges or kernel features end early, in one line, with status 2."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pktfate.attach.objects import RAW_PROGRAMS
from pktfate.attach.state import STATE_DIR
from pktfate.kernel import bpfsys
from pktfate.kernel.discovery import KernelInfo, drop_reason_table, probe_kernel
from pktfate.kernel.features import link_forms
from pktfate.lab.scenarios import ADDRESSES

from ..bad_values import BAD_VALUES
from ..readme import conditions, status_of
from .conftest import matching, pktfate_attachments, still_loaded, wait_for_file

pytestmark = pytest.mark.integration
PKTFATE = [sys.executable, "-m", "pktfate"]


@pytest.fixture
def healthy_lab(lab):
    lab.up("healthy")
    return lab


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_detaches_everything(healthy_lab, watch, sig):
    w = watch("--port", "80", "--xdp-generic")  # XDP too: every kind of hook
    assert "xdp" in pktfate_attachments(healthy_lab)  # attached while running
    programs = bpfsys.held_by(w.pid)["programs"]
    lines = w.stop(sig)
    assert w.returncode == 0
    assert lines[-1]["kind"] == "diagnosis"
    assert pktfate_attachments(healthy_lab) == ""
    assert still_loaded(programs) == set()


def _expected_attach(kernel: KernelInfo) -> dict[str, str]:
    """The start line's `attach` this kernel's features give (README, JSON output):
    the link forms it has, and each tracepoint with a BTF-typed raw form by it."""
    names = link_forms().attach_names()
    for name in RAW_PROGRAMS.values():
        if name in kernel.raw_tracepoints:
            names[name.split("/", 1)[1]] = "raw tracepoint link"
        elif kernel.has(name):
            names[name.split("/", 1)[1]] = names["tracepoints"]
    return names


def _gone(programs: set[int], timeout: float = 30) -> set[int]:
    """The programs of `programs` still loaded once the kernel has freed the others
    (it frees a dead process's programs shortly after, not at once)."""
    deadline = time.monotonic() + timeout
    while still_loaded(programs) and time.monotonic() < deadline:
        time.sleep(0.05)
    return still_loaded(programs)


def test_sigkill_leaves_nothing_where_the_kernel_has_links(healthy_lab, watch):
    """XDP, tcx, perf and raw tracepoint links end with the process: no cleanup
    after a kill -9, where the kernel has them (link_forms says; on a kernel
    without them, the start line says a kill would leave the hooks behind)."""
    forms = link_forms()
    w = watch("--port", "80", "--xdp-generic")
    start = w.lines()[0]
    attach = dict(start["attach"])
    assert attach.pop("bpf_object") in ("compiled", "cached")
    assert attach == _expected_attach(probe_kernel(mount_tracefs=False))
    held = bpfsys.held_by(w.pid)
    assert still_loaded(held["programs"]) == held["programs"]
    if not (forms.xdp and forms.tcx):
        assert [m for m in start["missing"] if "kill -9" in m], start["missing"]
        w.stop()
        return
    assert not [m for m in start["missing"] if "kill -9" in m]
    # XDP, tc ingress and egress on eth0, and every tracepoint program.
    assert len(held["links"]) >= 3 + 4 and len(held["programs"]) >= 3 + 4
    w.kill()
    assert _gone(held["programs"]) == set()
    assert pktfate_attachments(healthy_lab) == ""
    # Nothing for `pktfate cleanup` to do: links need no state file.
    assert not (STATE_DIR / f"watch-{w.pid}.json").exists()


def test_duration_ends_and_detaches(healthy_lab):
    proc = subprocess.run(healthy_lab.exec_argv("server", PKTFATE + [
        "watch", "--port", "80", "--duration", "1", "--json"]), capture_output=True, text=True,
        timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1].startswith('{"kind": "diagnosis"')
    assert pktfate_attachments(healthy_lab) == ""


def test_no_links_then_sigkill_then_cleanup(healthy_lab, watch):
    """The fallback (netlink XDP, clsact tc: kernels without links) leaves them."""
    w = watch("--port", "80", "--no-links", "--xdp-generic")
    start = w.lines()[0]
    assert "kill -9" in " ".join(start["missing"])
    assert {k: start["attach"][k] for k in ("xdp", "tc", "tracepoints")} == {
        "xdp": "netlink", "tc": "clsact", "tracepoints": "perf link"
        if link_forms().perf else "perf event"}
    w.kill()
    assert "pktfate-" in pktfate_attachments(healthy_lab)  # a killed run leaves them
    # The next run warns about the leftovers before anything is cleaned.
    warned = subprocess.run(healthy_lab.exec_argv("server", PKTFATE + [
        "watch", "--port", "81", "--duration", "0.5", "--no-xdp", "--no-tc"]),
        capture_output=True, text=True, timeout=120)
    assert "ended without detaching" in warned.stdout
    done = subprocess.run(healthy_lab.exec_argv("server", PKTFATE + ["cleanup"]),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "removed XDP program from eth0" in done.stdout
    assert pktfate_attachments(healthy_lab) == ""


def _one_line_error(proc: subprocess.CompletedProcess, words: str, condition: str) -> None:
    assert proc.returncode == status_of(condition), proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pktfate: error:"), proc.stderr
    assert words in lines[0]


@pytest.mark.parametrize("bad", BAD_VALUES, ids=lambda b: f"{b.command}:{b.param}")
def test_bad_value_as_root_is_one_line_and_leaves_nothing(healthy_lab, bad):
    """As root, inside the lab's server: every command's bad values (the table the
    unit tests hold complete), the ones refused at run time included."""
    proc = subprocess.run(healthy_lab.exec_argv("server", PKTFATE + list(bad.args)),
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    _one_line_error(proc, bad.words,
                    "unknown interface" if bad.param == "--iface" else "bad value")
    assert pktfate_attachments(healthy_lab) == ""


def test_no_bcc(healthy_lab, without_bcc):
    proc = subprocess.run(healthy_lab.exec_argv("server", [*without_bcc, "watch", "--port", "80"]),
                          capture_output=True, text=True, cwd="/", timeout=120)
    _one_line_error(proc, "install python3-bpfcc", "no bcc")
    assert pktfate_attachments(healthy_lab) == ""


def test_no_drop_reasons_where_the_kernel_names_none(healthy_lab):
    """On a kernel without drop reasons (before 5.17; the kernel matrix's 5.10) the
    watch goes on and says so; on one with them, it says nothing of the kind."""
    proc = subprocess.run(healthy_lab.exec_argv("server", PKTFATE + [
        "watch", "--port", "80", "--duration", "1", "--json", "--no-xdp"]),
        capture_output=True, text=True, timeout=120)
    start = json.loads(proc.stdout.splitlines()[0])
    said = [m for m in start["missing"] if m.startswith("drop reasons")]
    if drop_reason_table():
        assert said == [] and proc.returncode == 0, proc.stderr
    else:
        assert len(said) == 1 and proc.returncode == status_of("no drop reasons"), proc.stderr


# Each row of the README's table "When pktfate cannot do all of its job", and the
# tests that bring its condition about and hold pktfate to the row's status.
WALKED = {
    "bad value": "test_bad_value_as_root_is_one_line_and_leaves_nothing",
    "unknown interface": "test_bad_value_as_root_is_one_line_and_leaves_nothing",
    "not root": "test_not_root",
    "no bcc": "test_no_bcc",
    "no tracefs": "test_no_tracefs",
    "not a recording": "tests/unit/test_recording.py::test_not_a_recording",
    "no BTF": "test_no_btf_goes_on_with_xdp_and_tc",
    "no drop reasons": "test_no_drop_reasons_where_the_kernel_names_none",
    "no links": "test_no_links_then_sigkill_then_cleanup",
}


def test_the_readme_table_of_conditions_is_walked():
    assert set(conditions()) == set(WALKED)
    for test in WALKED.values():
        path, _, name = test.rpartition("::")
        where = Path(__file__).parents[2] / path if path else Path(__file__)
        assert f"def {name}(" in where.read_text(), test


def test_not_root(healthy_lab, as_nobody):
    proc = subprocess.run(healthy_lab.exec_argv("server", [*as_nobody, "watch", "--port", "80"]),
                          capture_output=True, text=True, cwd="/")
    _one_line_error(proc, "needs root", "not root")
    assert pktfate_attachments(healthy_lab) == ""
    agent = subprocess.run(healthy_lab.exec_argv("server", [*as_nobody, "agent"]),
                           capture_output=True, text=True, cwd="/")
    _one_line_error(agent, "pktfate agent needs root", "not root")


def _private_sys_kernel(tmp_path, keep: str, then: tuple[str, ...]) -> str:
    """A script for `unshare -m`: an empty tmpfs over /sys/kernel in a private
    mount namespace, with only /sys/kernel/KEEP carried over, then `then`."""
    return "\n".join((
        "set -e", "mount --make-rprivate /", f"mkdir -p {tmp_path}/{keep}",
        f"mount --bind /sys/kernel/{keep} {tmp_path}/{keep}", "mount -t tmpfs none /sys/kernel",
        f"mkdir /sys/kernel/{keep}", f"mount --move {tmp_path}/{keep} /sys/kernel/{keep}",
        *then))


def test_no_tracefs(healthy_lab, tmp_path):
    # In a private mount namespace, hide /sys/kernel behind a read-only tmpfs that
    # keeps BTF but has a *file* where tracefs would be mounted: the mount fails.
    script = _private_sys_kernel(tmp_path, keep="btf", then=(
        "mkdir /sys/kernel/debug", "touch /sys/kernel/tracing",
        "mount -o remount,ro /sys/kernel", f"exec {' '.join(PKTFATE)} watch --port 80"))
    proc = subprocess.run(healthy_lab.exec_argv("server", ["unshare", "-m", "sh", "-c", script]),
                          capture_output=True, text=True, timeout=60)
    _one_line_error(proc, "tracefs is not mounted and could not be mounted", "no tracefs")
    assert pktfate_attachments(healthy_lab) == ""


def udp_flood(netns: str, addr: str, port: int, count: int) -> int:
    """Send `count` UDP datagrams from inside `netns`, as fast as they go (a bounded
    loop in Python: hping3 aborts on the ICMP errors a closed port sends back; an
    unconnected socket is not told about them)."""
    code = (f"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"n = 0\nfor _ in range({count}):\n"
            f"    n += s.sendto(b'x', ('{addr}', {port}))\nprint(n)")
    proc = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=120, check=True)
    return int(proc.stdout)


@pytest.fixture
def noise_netns(lab):
    name = f"{lab.prefix}-noise"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_drops_in_other_namespaces_never_appear(healthy_lab, watch, noise_netns):
    w = watch("--port", "9")
    # A flood of UDP to a closed port 9 in another namespace: each one a
    # NO_SOCKET drop there, on the same kernel, matching the watched port.
    assert udp_flood(noise_netns, "127.0.0.1", 9, 20000) == 20000
    # The control: five to the server's closed port 9, from the client.
    healthy_lab.sh("client", f"for i in 1 2 3 4 5; do echo x | nc -u -w0 "
                             f"{ADDRESSES['server_ip']} 9; done")
    # A ping on the same path behind them: by its reply, the five have been handled.
    healthy_lab.sh("client", f"ping -c 1 -W 2 {ADDRESSES['server_ip']}")
    lines = w.stop()
    drops = matching(lines, kind="packet", hook="drop", proto="udp")
    assert len(drops) == 5
    assert {d["src"] for d in drops} == {ADDRESSES["client_ip"]}
    assert not [line for line in lines if line.get("src") == "127.0.0.1"]
    server_netns = os.stat(f"/run/netns/{healthy_lab.ns('server')}").st_ino
    assert {d["netns"] for d in drops} == {server_netns}


def test_closed_output_pipe_detaches(healthy_lab, tmp_path):
    # `pktfate watch | head -n 1`: the reader leaves after the start line, the next
    # event's write fails inside the event handler, and the watch must detach.
    ready = tmp_path / "ready"
    script = (f"set -o pipefail; {' '.join(PKTFATE)} watch --json --port 80 "
              f"--ready-file {ready} 2>{tmp_path}/err | head -n 1")
    proc = subprocess.Popen(healthy_lab.exec_argv("server", ["bash", "-c", script]),
                            stdout=subprocess.PIPE, text=True)
    try:
        wait_for_file(ready, proc)
        healthy_lab.sh("client", f"curl -sS -m 3 -o /dev/null http://{ADDRESSES['server_ip']}/")
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert out.startswith('{"kind": "start"')
    assert proc.returncode == 1
    err = (tmp_path / "err").read_text()
    assert "output closed; stopped and detached" in err
    assert "Exception ignored" not in err and "Traceback" not in err  # nothing flushed late
    assert pktfate_attachments(healthy_lab) == ""


def test_no_btf_goes_on_with_xdp_and_tc(healthy_lab, tmp_path):
    # Hide BTF (keep tracefs) in a private mount namespace: no tracepoint can read
    # an sk_buff, so pktfate says so and follows packets with XDP and tc alone.
    ready = tmp_path / "ready"
    script = _private_sys_kernel(tmp_path, keep="tracing", then=(
        f"exec {' '.join(PKTFATE)} watch --json --port 80 --xdp-generic --ready-file {ready}",))
    proc = subprocess.Popen(healthy_lab.exec_argv("server", ["unshare", "-m", "sh", "-c",
                                                             script]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_file(ready, proc)
        assert healthy_lab.sh("client", f"curl -sS -m 3 -o /dev/null "
                                        f"http://{ADDRESSES['server_ip']}/").returncode == 0
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == status_of("no BTF"), err
    lines = [json.loads(line) for line in out.splitlines()]
    assert any("kernel BTF" in m for m in lines[0]["missing"])
    assert matching(lines, kind="packet", hook="xdp", tcp_flags="S", dport=80)
    assert not matching(lines, kind="packet", hook="drop")
    assert [f["cause"] for f in lines[-1]["findings"]] == ["healthy"]
    assert pktfate_attachments(healthy_lab) == ""


@pytest.mark.usefixtures("healthy_lab")
def test_all_netns_widens_the_kernel_filter(watch, noise_netns):
    w = watch("--port", "9", "--all-netns", "--no-xdp", "--no-tc")
    assert udp_flood(noise_netns, "127.0.0.1", 9, 50) == 50
    lines = w.stop()
    noise = os.stat(f"/run/netns/{noise_netns}").st_ino
    drops = matching(lines, kind="packet", hook="drop", proto="udp", src="127.0.0.1",
                     netns=noise)
    assert len(drops) == 50


@pytest.mark.usefixtures("healthy_lab")
def test_the_compiled_object_is_cached_and_a_refused_one_compiled_again(
        watch, tmp_path, monkeypatch):
    """The second start loads what the first compiled; an entry the kernel refuses
    (its instructions cut short here) is dropped and compiled again."""
    cache = tmp_path / "bpf-cache"
    monkeypatch.setenv("PKTFATE_BPF_CACHE", str(cache))
    sources = []
    for _ in range(2):
        w = watch("--port", "80")
        sources.append(w.lines()[0]["attach"]["bpf_object"])
        w.stop()
    assert sources == ["compiled", "cached"]
    [entry] = cache.glob("*.json")
    data = json.loads(entry.read_text())
    data["programs"][0]["insns"] = data["programs"][0]["insns"][:16]  # 12 bytes of code
    entry.write_text(json.dumps(data))
    w = watch("--port", "80")
    assert w.lines()[0]["attach"]["bpf_object"] == "compiled"
    lines = w.stop()
    assert lines[-1]["kind"] == "diagnosis"
    assert json.loads(entry.read_text())["programs"][0]["insns"] != data["programs"][0]["insns"]
