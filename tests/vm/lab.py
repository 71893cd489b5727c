"""The Vagrant lab booted for real, the nearest way this machine can (no KVM, no
libvirt): three VMs, client, router and server, under qemu's software emulation
from the kernel matrix's image (Debian 12 and its 6.1 kernel, as the Vagrantfile's
box), their NICs taps on two bridges inside a private network namespace, with
vnet headers on as libvirt does, so that a partial checksum crosses from VM to VM
as it would there. Each VM is provisioned by vagrant/provision.sh (lab-agent.sh);
scenarios are applied by vagrant/scenario.sh, whose PKTFATE_ON hook runs each
machine's part through `lab.py exec` instead of `vagrant ssh`; pktfate watches on
the server VM while the client VM sends the scenario's traffic.

    python tests/vm/lab.py run [--scenario NAME ...] [--record]

Prints each scenario's transcript and checks its top cause; --record keeps the
transcript in vagrant/README.md. Exit 1 when a cause is wrong, 2 when the lab
cannot run here."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import matrix  # noqa: E402 - the image and its kernels, shared with the matrix

HERE = matrix.HERE
PROJECT = matrix.PROJECT
VAGRANT_README = PROJECT / "vagrant" / "README.md"
KERNEL_SERIES = "6.1"  # the Vagrantfile's box: Debian 12
DEFAULT_SCENARIOS = ("checksum", "firewall-drop", "no-listener")
# Role -> its NICs: (bridge, address), in PCI order, so eth0, eth1 in the guest.
# The addresses are the Vagrantfile's private_network ones.
MACHINES = {
    "router": (("client-net", "10.0.1.1/24"), ("server-net", "10.0.2.1/24")),
    "server": (("server-net", "10.0.2.2/24"),),
    "client": (("client-net", "10.0.1.2/24"),),
}
WATCH_SECONDS = 25
LIFETIME = 3600  # seconds: a VM whose runner died powers itself off after this


class Lab:
    """The three VMs, their network namespace and their job folders."""

    def __init__(self, image: Path, version: str, root: Path):
        self.image, self.version, self.root = image, version, root
        self.netns = f"pfvl{os.getpid() % 100000}"
        self.qemu: dict[str, subprocess.Popen] = {}
        self.seq = 0

    # ------------------------------------------------------------ the machines

    def up(self) -> None:
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        self._ns("ip", "link", "set", "lo", "up")
        for bridge in ("client-net", "server-net"):
            self._ns("ip", "link", "add", bridge, "type", "bridge")
            self._ns("ip", "link", "set", bridge, "up")
        for index, (role, nics) in enumerate(MACHINES.items()):
            job = self.job(role)
            job.mkdir(parents=True)
            guest_nics = " ".join(f"eth{i}={addr}" for i, (_, addr) in enumerate(nics))
            (job / "env").write_text(f"ROLE={role}\nNICS='{guest_nics}'\nLIFETIME={LIFETIME}\n")
            shutil.copy(HERE / "lab-agent.sh", job / "job.sh")
            netdevs = []
            for i, (bridge, _) in enumerate(nics):
                tap = f"{role[0]}{i}"
                # A tap with vnet headers: qemu hands the guest's checksum-offload
                # flags across, as libvirt's do.
                self._ns("ip", "tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr")
                self._ns("ip", "link", "set", tap, "master", bridge, "up")
                netdevs += ["-netdev", f"tap,id=n{i},ifname={tap},script=no,downscript=no,"
                                       "vnet_hdr=on",
                            "-device", f"virtio-net-pci,netdev=n{i},"
                                       f"mac=52:54:00:00:{index:02x}:{i:02x}"]
            self.qemu[role] = self._boot(role, job, netdevs)

    def _boot(self, role: str, job: Path, netdevs: list[str]) -> subprocess.Popen:
        cpus = "2" if role == "server" else "1"  # the server compiles BPF
        argv = ["ip", "netns", "exec", self.netns, "qemu-system-x86_64",
                "-accel", "tcg,thread=multi", "-machine", "q35",
                "-cpu", "max", "-m", "1536", "-smp", cpus,
                "-kernel", f"{self.image}/boot/vmlinuz-{self.version}",
                "-initrd", f"{self.image}/boot/initrd.img-{self.version}",
                "-append", "root=/dev/vda rw console=ttyS0 quiet systemd.show_status=0 "
                           "net.ifnames=0 panic=-1",
                "-drive", f"file={self.image}/disk.img,format=raw,if=virtio,cache=unsafe",
                "-snapshot", *netdevs,
                "-virtfs", f"local,path={job},mount_tag=job,security_model=none,id=job",
                "-virtfs", f"local,path={PROJECT},mount_tag=src,security_model=none,"
                           "readonly=on,id=src",
                "-display", "none", "-monitor", "none", "-serial", f"file:{job}/serial.log",
                "-no-reboot"]
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=(job / "qemu.log").open("w"))

    def _ns(self, *argv: str) -> None:
        subprocess.run(["ip", "netns", "exec", self.netns, *argv], check=True)

    def job(self, role: str) -> Path:
        return self.root / role

    def wait_provisioned(self, timeout: float = 900) -> dict[str, str]:
        """Each machine's provisioning exit status ('died' when its VM ended first)."""
        deadline, status = time.monotonic() + timeout, dict[str, str]()
        while len(status) < len(MACHINES) and time.monotonic() < deadline:
            for role in MACHINES:
                done = self.job(role) / "provisioned"
                if role not in status and done.exists():
                    status[role] = done.read_text().strip()
                elif role not in status and self.qemu[role].poll() is not None:
                    status[role] = "died"
            time.sleep(1)
        return {role: status.get(role, "timeout") for role in MACHINES}

    def down(self) -> None:
        for role in MACHINES:
            if self.job(role).exists():
                (self.job(role) / "halt").touch()
        deadline = time.monotonic() + 60
        for proc in self.qemu.values():
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()  # the Popen is qemu itself: ip netns exec execs it
                proc.wait()
        subprocess.run(["ip", "netns", "delete", self.netns], stderr=subprocess.DEVNULL)

    # ------------------------------------------------------- commands in a VM

    def start(self, role: str, command: str) -> Path:
        """Hand `command` to the machine's agent; the path its results take (.out, .rc)."""
        return submit(self.job(role), command)

    def run(self, role: str, command: str, timeout: float = 300) -> tuple[int, str]:
        return wait(self.start(role, command), timeout)


def submit(job: Path, command: str) -> Path:
    cmd = job / "cmd"
    cmd.mkdir(exist_ok=True)
    name = f"{time.monotonic_ns()}-{os.getpid()}"
    tmp = cmd / f"{name}.tmp"
    tmp.write_text(command + "\n")
    tmp.rename(cmd / f"{name}.sh")  # the agent picks up only whole files
    return cmd / name


def wait(base: Path, timeout: float) -> tuple[int, str]:
    rc = base.with_name(base.name + ".rc")
    deadline = time.monotonic() + timeout
    while not rc.exists():
        if time.monotonic() > deadline:
            return 124, f"(no answer from the VM in {timeout:g} s)"
        time.sleep(0.3)
    out = base.with_name(base.name + ".out")
    return int(rc.read_text().strip() or 1), out.read_text() if out.exists() else ""


# ------------------------------------------------------------------ scenarios


def run_scenario(lab: Lab, name: str, say) -> tuple[str, bool]:
    """Apply NAME with vagrant/scenario.sh, watch on the server while the client sends
    the scenario's traffic; the top cause of the diagnosis, and whether it is right."""
    from pktfate.lab.scenarios import SCENARIOS

    scenario = SCENARIOS[name]
    say(f"$ ./scenario.sh {name}")
    proc = scenario_sh(lab.root, name)
    say(_indent(proc.stdout + proc.stderr))
    if proc.returncode != 0:
        return f"scenario.sh failed ({proc.returncode})", False
    server_job = lab.job("server")
    for stale in ("ready", f"{name}.jsonl"):
        (server_job / stale).unlink(missing_ok=True)
    watch = (f"pktfate watch --port {scenario.port} --duration {WATCH_SECONDS} --json "
             f"--ready-file /mnt/job/ready > /mnt/job/{name}.jsonl")
    say(f"server$ {watch}")
    watching = lab.start("server", watch)
    deadline = time.monotonic() + 300
    while not (server_job / "ready").exists():
        if time.monotonic() > deadline or watching.with_name(watching.name + ".rc").exists():
            rc, out = wait(watching, 1)
            return f"the watch did not start ({rc}): {out.strip()[:200]}", False
        time.sleep(0.5)
    for command in scenario.commands("traffic", "client"):
        say(f"client$ {command}")
        rc, out = lab.run("client", command, timeout=120)
        say(_indent(out + (f"(exit status {rc})" if rc else "")))
    rc, out = wait(watching, WATCH_SECONDS + 120)
    if rc != 0:
        return f"the watch failed ({rc}): {out.strip()[:200]}", False
    say(f"server$ pktfate explain {name}.jsonl")
    rc, out = lab.run("server", f"pktfate explain /mnt/job/{name}.jsonl")
    say(_indent(out))
    got, _ = matrix.top_finding(server_job / f"{name}.jsonl")
    return got, got == scenario.expect


def scenario_sh(jobs: Path, name: str) -> subprocess.CompletedProcess:
    """vagrant/scenario.sh NAME, each machine's part run in its VM by `lab.py exec`."""
    hook = shlex.join([sys.executable, str(Path(__file__).resolve()), "exec", "--jobs",
                       str(jobs)])
    return subprocess.run(["sh", str(PROJECT / "vagrant" / "scenario.sh"), name],
                          env=dict(os.environ, PKTFATE_ON=hook), capture_output=True,
                          text=True, timeout=600)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines())


def record(transcript: list[str], summary: list[str]) -> None:
    text = VAGRANT_README.read_text()
    block = "\n".join(summary + ["", "```"] + transcript + ["```"])
    text = re.sub(r"(<!-- qemu-lab:begin -->\n).*?(\n<!-- qemu-lab:end -->)",
                  lambda m: m.group(1) + block + m.group(2), text, flags=re.S)
    VAGRANT_README.write_text(text)


def run(args: argparse.Namespace) -> int:
    if not matrix.can_boot("lab", "it boots VMs and makes a network namespace"):
        return 2
    image = matrix.build_image()
    version = matrix.kernels(image).get(KERNEL_SERIES)
    if not version:
        print(f"lab: the image has no {KERNEL_SERIES} kernel", file=sys.stderr)
        return 2
    transcript: list[str] = []

    def say(line: str) -> None:
        if line:
            print(line, flush=True)
            transcript.append(line)

    # SIGTERM (a test's timeout, an operator) ends the run through `finally`: the VMs
    # halted, the namespace deleted.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    root = Path(tempfile.mkdtemp(prefix="pktfate-vmlab-"))
    lab = Lab(image, version, root)
    started, results = time.monotonic(), {}
    try:
        say(f"# three VMs booting {version} (qemu TCG), NICs on bridges with vnet headers")
        lab.up()
        status = lab.wait_provisioned()
        for role in MACHINES:
            say(f"{role}: provision.sh {role} -> "
                f"{_last_line(lab.job(role) / 'provision.log')} (exit {status[role]})")
        if any(s != "0" for s in status.values()):
            return 1
        for name in args.scenario or DEFAULT_SCENARIOS:
            results[name] = run_scenario(lab, name, say)
            say(f"# {name}: top cause {results[name][0]}"
                f" {'ok' if results[name][1] else 'WRONG'}")
            lab.run("client", "true")  # nothing left running from the traffic
        scenario_sh(root, "reset")
    finally:
        if args.keep:
            shutil.copytree(root, args.keep, dirs_exist_ok=True)
        lab.down()
        shutil.rmtree(root, ignore_errors=True)
    minutes = (time.monotonic() - started) / 60
    summary = [f"Run {time.strftime('%Y-%m-%d')}, {minutes:.0f} minutes, Debian 12's {version} in "
               "all three VMs,", "by `sudo .venv/bin/python tests/vm/lab.py run --record`:"]
    summary += [f"- {name}: top cause `{got}` {'(expected)' if ok else '(WRONG)'}"
                for name, (got, ok) in results.items()]
    print("\n".join(summary))
    if args.record:
        record(transcript, summary)
    return 0 if all(ok for _, ok in results.values()) else 1


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text().strip().splitlines()
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(empty log)"


def exec_in(args: argparse.Namespace) -> int:
    """vagrant/scenario.sh's PKTFATE_ON hook: run ARGV on ROLE's VM, as `vagrant ssh
    ROLE -c 'sudo ARGV'` would."""
    rc, out = wait(submit(args.jobs / args.role, shlex.join(args.argv)), args.timeout)
    sys.stdout.write(out)
    return rc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="boot the lab, run scenarios, check their causes")
    run_p.add_argument("--scenario", action="append", help="default: "
                       + ", ".join(DEFAULT_SCENARIOS))
    run_p.add_argument("--record", action="store_true", help="transcript into vagrant/README.md")
    run_p.add_argument("--keep", type=Path, help="copy the VMs' job folders here")
    exec_p = sub.add_parser("exec", help="run a command in one VM (scenario.sh's PKTFATE_ON)")
    exec_p.add_argument("--jobs", type=Path, required=True)
    exec_p.add_argument("--timeout", type=float, default=300)
    exec_p.add_argument("role", choices=sorted(MACHINES))
    exec_p.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    return run(args) if args.command == "run" else exec_in(args)


if __name__ == "__main__":
    sys.exit(main())
