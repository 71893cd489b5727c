"""`pktfate lab demo`: build the lab with a scenario, watch on the scenario's host
while the client sends its traffic, and print pktfate's diagnosis."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

from .namespaces import STATE_DIR, Lab, wait_for
from .runner import READY_WAIT
from .scenarios import ADDRESSES, SCENARIOS, Scenario

# Seconds the demo waits for the watch to attach (runner.READY_WAIT says why).
ATTACH_WAIT = READY_WAIT


def watch_argv(*args: str) -> list[str]:
    """pktfate itself, run by the interpreter running now (the virtualenv's)."""
    return [sys.executable, "-m", "pktfate", *args]


def _demo_probe(lab: Lab, scenario: Scenario, out) -> int:
    """The scenario's `pktfate probe` from the client, if it has one."""
    if not scenario.probe:
        return 0
    args = [ADDRESSES["server_ip"], *scenario.probe_args()]
    out.write(f"\nclient$ pktfate probe {' '.join(args)}\n")
    out.flush()
    return subprocess.run(lab.exec_argv("client", watch_argv("probe", *args)), stdout=out,
                          stderr=out, timeout=120).returncode


def run_demo(scenario: str, prefix: str = "pfl", duration: float = 8.0, keep: bool = False,
             out=sys.stdout, json_out: bool = False) -> int:
    """Build the lab with `scenario`, watch port 80 on the server while the client
    pings and curls it, print the diagnosis. With `json_out` the watch's JSON lines
    go to `out` and the demo's own commentary to stderr (the kernel matrix reads
    the lines)."""
    if json_out:
        return _run_demo(scenario, prefix, duration, keep, sys.stderr, out, json_out)
    return _run_demo(scenario, prefix, duration, keep, out, out, json_out)


def _run_demo(scenario: str, prefix: str, duration: float, keep: bool, out, watch_out,
              json_out: bool) -> int:
    json_args = ["--json"] if json_out else []
    lab = Lab(prefix).up(scenario)
    ready = STATE_DIR / f"lab-{prefix}-watch.ready"
    ready.unlink(missing_ok=True)
    try:
        intro = f"lab: scenario {scenario}: {SCENARIOS[scenario].summary}"
        out.write(textwrap.fill(intro, 99, subsequent_indent="  ") + "\n")
        port, host = SCENARIOS[scenario].port, SCENARIOS[scenario].watch_host
        out.write(f"{host}$ pktfate watch --port {port} --duration {duration:g}\n")
        out.flush()
        watcher = subprocess.Popen(
            lab.exec_argv(host, watch_argv("watch", "--port", port,
                                               "--duration", str(duration),
                                               "--ready-file", str(ready), *json_args)),
            stdout=watch_out, stderr=out)
        try:
            wait_for(lambda: ready.exists() or watcher.poll() is not None, "pktfate to attach",
                     ATTACH_WAIT)
            for command in SCENARIOS[scenario].commands("traffic", "client"):
                proc = lab.sh("client", command, check=False)
                result = (proc.stdout + proc.stderr).strip().splitlines()
                out.write(f"client$ {command}\n")
                for line in result[-3:]:
                    out.write(f"  {line}\n")
                out.flush()
            code = watcher.wait(timeout=duration + 60)
        finally:
            if watcher.poll() is None:
                watcher.send_signal(signal.SIGINT)
                watcher.wait(timeout=30)
        return code or (0 if json_args else _demo_probe(lab, SCENARIOS[scenario], out))
    finally:
        if not keep:
            lab.down()
