"""`make vagrant-test`: the README's Vagrant lab for real, as a user types it, on
libvirt: libvirtd started if it is not running, the box built here from Debian's
packages if missing (vagrant/build-box.sh), `vagrant up` of the three VMs, the
checksum scenario applied with ./scenario.sh, `pktfate watch` on the server VM
while the client sends, its top cause checked, then `vagrant destroy -f`, however
it went. Each step's time is printed; the end compares libvirt's domains,
networks and volumes with what there was before.

    python3 tests/vm/vagrant_test.py [--transcript FILE]

Exit 0 when the top cause is tcp-bad-checksum and nothing is left behind; 1 when
not; 2 when it cannot run here (not root, no vagrant-libvirt)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
VAGRANT_DIR = PROJECT / "vagrant"
BOX = "pktfate/bookworm-local"
EXPECTED = "tcp-bad-checksum"
LIBVIRT = "qemu:///system"


class Transcript:
    """What the run printed, each command's last lines with it; every command's
    whole output goes to `log` too."""

    def __init__(self, log: Path) -> None:
        self.lines: list[str] = []
        self.steps: list[tuple[str, float, str]] = []
        self.log = log.open("w")

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.lines.append(text)

    def step(self, name: str, argv: list[str], timeout: float, env: dict | None = None,
             check: bool = True, cwd: Path = VAGRANT_DIR) -> subprocess.CompletedProcess:
        self.say(f"$ {' '.join(argv)}")
        start = time.monotonic()
        proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout)
        took = time.monotonic() - start
        self.log.write(f"$ {' '.join(argv)}\n{proc.stdout}{proc.stderr}\n")
        self.log.flush()
        out = (proc.stdout + proc.stderr).strip().splitlines()
        for line in out[-12:]:
            self.say(f"  {line}")
        verdict = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
        self.steps.append((name, took, verdict))
        self.say(f"  [{name}: {took:.0f} s, {verdict}]")
        if check and proc.returncode != 0:
            raise StepFailed(name)
        return proc


class StepFailed(Exception):
    pass


def virsh(*args: str) -> list[str]:
    proc = subprocess.run(["virsh", "-c", LIBVIRT, *args], capture_output=True, text=True)
    return sorted(line.strip() for line in proc.stdout.splitlines() if line.strip())


def libvirt_state() -> dict[str, list[str]]:
    """What a run must leave as it found: domains, networks, volumes of the pool."""
    return {"domains": virsh("list", "--all", "--name"),
            "networks": virsh("net-list", "--all", "--name"),
            "volumes": [line.split()[0] for line in virsh("vol-list", "default")
                        if not line.startswith(("Name", "---"))]}


def libvirt_answers() -> bool:
    return subprocess.run(["virsh", "-c", LIBVIRT, "version"], capture_output=True).returncode == 0


def start_libvirt(t: Transcript) -> list[str]:
    """Start virtlogd and libvirtd where they are not running (a machine without
    systemd, as here); returns the pid files of those started, to stop them after."""
    if libvirt_answers():
        t.say("libvirtd: running already")
        return []
    started = []
    for daemon in ("virtlogd", "libvirtd"):
        pidfile = f"/run/{daemon}.pid"
        if _alive(pidfile):
            continue
        subprocess.run([daemon, "-d", "--pid-file", pidfile], check=True)
        started.append(pidfile)
    deadline = time.monotonic() + 60
    while not libvirt_answers():
        if time.monotonic() > deadline:
            raise StepFailed("libvirtd did not answer within 60 s")
        time.sleep(0.5)
    t.say("libvirtd: started (virtlogd, libvirtd)")
    return started


def _alive(pidfile: str) -> bool:
    try:
        os.kill(int(Path(pidfile).read_text().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


def default_pool(t: Transcript) -> bool:
    """vagrant-libvirt puts the boxes' volumes in the pool "default": made (and
    removed after) where libvirt has none."""
    if virsh("pool-list", "--all", "--name").count("default"):
        return False
    target = "/var/lib/libvirt/images"
    os.makedirs(target, exist_ok=True)
    subprocess.run(["virsh", "-c", LIBVIRT, "pool-define-as", "default", "dir", "--target",
                    target], check=True, capture_output=True)
    subprocess.run(["virsh", "-c", LIBVIRT, "pool-start", "default"], check=True,
                   capture_output=True)
    t.say("libvirt: made the storage pool default (removed after)")
    return True


def forget_box_volumes(t: Transcript, before: list[str]) -> None:
    """vagrant-libvirt copies the box's disk into the pool at the first `up` and
    keeps it there for the next (`vagrant destroy` leaves it): the run made it, so
    the run removes it (the next `up` copies it again, in seconds)."""
    for volume in libvirt_state()["volumes"]:
        if volume not in before and "_vagrant_box_image_" in volume:
            subprocess.run(["virsh", "-c", LIBVIRT, "vol-delete", "--pool", "default", volume],
                           capture_output=True)
            t.say(f"removed the box's copy in the pool: {volume}")


def stop_pidfiles(pidfiles: list[str]) -> None:
    for pidfile in reversed(pidfiles):
        try:
            pid = int(Path(pidfile).read_text().strip())
            os.kill(pid, 15)
        except (OSError, ValueError):
            continue


def run_lab(t: Transcript, env: dict) -> str:
    """Up, scenario, watch, traffic; returns the top cause."""
    t.step("vagrant up", ["vagrant", "up", "--provider=libvirt"], 7200, env)
    t.step("ping through the router", ["vagrant", "ssh", "client", "-c", "ping -c 3 10.0.2.2"],
           300, env)
    t.step("./scenario.sh checksum", ["./scenario.sh", "checksum"], 900, env)
    watch = subprocess.Popen(
        ["vagrant", "ssh", "server", "-c",
         "sudo pktfate watch --port 80 --json --duration 900 --ready-file /tmp/pf-ready "
         "> /tmp/watch.jsonl 2> /tmp/watch.err"],
        cwd=VAGRANT_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t.say("$ vagrant ssh server -c 'sudo pktfate watch --port 80 --json ...'   (in the "
          "background)")
    start = time.monotonic()
    while subprocess.run(["vagrant", "ssh", "server", "-c", "test -f /tmp/pf-ready"],
                         cwd=VAGRANT_DIR, env=env, capture_output=True).returncode != 0:
        if watch.poll() is not None or time.monotonic() - start > 900:
            t.step("the watch's error", ["vagrant", "ssh", "server", "-c",
                                         "cat /tmp/watch.err"], 120, env, check=False)
            raise StepFailed("the watch on the server was not ready")
        time.sleep(10)
    t.steps.append(("watch ready on the server", time.monotonic() - start, "ok"))
    t.say(f"  [watch ready on the server: {time.monotonic() - start:.0f} s]")
    t.step("the client sends", ["vagrant", "ssh", "client", "-c",
                                "for i in 1 2 3; do curl -sS -m 3 -o /dev/null "
                                "http://10.0.2.2/ || true; done"], 600, env, check=False)
    t.step("stop the watch", ["vagrant", "ssh", "server", "-c",
                              "sudo kill -INT $(cat /tmp/pf-ready)"], 120, env)
    watch.wait(timeout=600)
    out = t.step("its diagnosis", ["vagrant", "ssh", "server", "-c",
                                   "tail -n 1 /tmp/watch.jsonl"], 120, env)
    line = next(x for x in reversed(out.stdout.splitlines()) if x.startswith("{"))
    findings = json.loads(line)["findings"]
    top = findings[0]["cause"] if findings else "(none)"
    t.say(f"top cause: {top}: {findings[0]['summary'] if findings else ''}")
    return top


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transcript", type=Path, help="also write the transcript here")
    parser.add_argument("--log", type=Path, default=Path("/tmp/pktfate-vagrant-test.log"),
                        help="every command's whole output (default: %(default)s)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("vagrant-test: needs root (libvirt, the box)", file=sys.stderr)
        return 2
    for tool in ("vagrant", "virsh", "libvirtd"):
        if not shutil.which(tool):
            print(f"vagrant-test: {tool} is missing: run make setup-dev", file=sys.stderr)
            return 2
    t = Transcript(args.log)
    env = dict(os.environ, PKTFATE_BOX=BOX, VAGRANT_DEFAULT_PROVIDER="libvirt",
               PKTFATE_CPUS=os.environ.get("PKTFATE_CPUS", "1"),
               PKTFATE_MEMORY=os.environ.get("PKTFATE_MEMORY", "1024"))
    started, pool, top, left = [], False, "(not reached)", {}
    try:
        started = start_libvirt(t)
        pool = default_pool(t)
        before = libvirt_state()
        t.step("the box", ["sh", str(VAGRANT_DIR / "build-box.sh"), BOX], 3600, env)
        try:
            top = run_lab(t, env)
        except (StepFailed, subprocess.TimeoutExpired, StopIteration, ValueError) as exc:
            t.say(f"failed: {exc}")
        finally:
            t.step("vagrant destroy -f", ["vagrant", "destroy", "-f"], 1800, env, check=False)
            forget_box_volumes(t, before["volumes"])
        after = libvirt_state()
        left = {kind: sorted(set(after[kind]) - set(before[kind])) for kind in after}
        left = {kind: names for kind, names in left.items() if names}
        t.say(f"left behind: {left or 'nothing'}")
    finally:
        if pool:
            subprocess.run(["virsh", "-c", LIBVIRT, "pool-destroy", "default"],
                           capture_output=True)
            subprocess.run(["virsh", "-c", LIBVIRT, "pool-undefine", "default"],
                           capture_output=True)
        stop_pidfiles(started)
    t.say("")
    t.say("| step | seconds | |")
    t.say("|---|---|---|")
    for name, took, verdict in t.steps:
        t.say(f"| {name} | {took:.0f} | {verdict} |")
    if args.transcript:
        args.transcript.write_text("\n".join(t.lines) + "\n")
    return 0 if top == EXPECTED and not left else 1


if __name__ == "__main__":
    sys.exit(main())
