"""`pktfate lab demo --everywhere`: a watch in each of the lab's namespaces (client,
router, server) while the client sends the scenario's traffic, each recorded with
`--json`; then the recordings, merged into the path each packet took
(`pktfate explain client.jsonl router.jsonl server.jsonl`)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from .demo import ATTACH_WAIT, watch_argv
from .namespaces import HOSTS, STATE_DIR, Lab, wait_for
from .scenarios import ADDRESSES, SCENARIOS


def record_everywhere(scenario: str, prefix: str, duration: float, into: Path,
                      out) -> dict[str, Path]:
    """Build the lab with `scenario`, watch its port in every namespace, send the
    traffic; each host's recording in `into`/HOST.jsonl (returned by host)."""
    lab = Lab(prefix).up(scenario)
    port = SCENARIOS[scenario].port
    watchers: dict[str, tuple[subprocess.Popen, Path]] = {}
    recordings = {host: into / f"{host}.jsonl" for host in HOSTS}  # and the probe's
    try:
        for host in HOSTS:
            ready = STATE_DIR / f"lab-{prefix}-{host}.ready"
            ready.unlink(missing_ok=True)
            out.write(f"{host}$ pktfate watch --port {port} --duration {duration:g} --json "
                      f"> {recordings[host].name}\n")
            with recordings[host].open("wb") as recording:
                proc = subprocess.Popen(lab.exec_argv(host, watch_argv(
                    "watch", "--port", port, "--duration", str(duration), "--json",
                    "--ready-file", str(ready))), stdout=recording, stderr=out)
            watchers[host] = (proc, ready)
        for proc, ready in watchers.values():
            wait_for(lambda p=proc, r=ready: r.exists() or p.poll() is not None,
                     "pktfate to attach", ATTACH_WAIT)
        for command in SCENARIOS[scenario].commands("traffic", "client"):
            result = lab.sh("client", command, check=False)
            out.write(f"client$ {command}\n")
            for line in (result.stdout + result.stderr).strip().splitlines()[-2:]:
                out.write(f"  {line}\n")
        if SCENARIOS[scenario].probe:  # the scenario's probe, recorded too
            args = [ADDRESSES["server_ip"], *SCENARIOS[scenario].probe_args(), "--json"]
            out.write(f"client$ pktfate probe {' '.join(args)} > client-probe.json\n")
            recordings["client-probe"] = into / "client-probe.json"
            with recordings["client-probe"].open("wb") as probe_out:
                subprocess.run(lab.exec_argv("client", watch_argv("probe", *args)),
                               stdout=probe_out, stderr=out, timeout=120, check=False)
        for proc, _ in watchers.values():
            proc.wait(timeout=duration + 60)
    finally:
        for proc, _ in watchers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=30)
        lab.down()
    return recordings


def run_everywhere(scenario: str, prefix: str, duration: float, keep_in: str | None,
                   json_out: bool) -> int:
    """Record everywhere, then print the merged story (the commentary on stderr
    with --json). The recordings go to `keep_in`, else a folder removed after."""
    from ..watch import run_explain_merged

    commentary = sys.stderr if json_out else sys.stdout
    into = Path(keep_in) if keep_in else Path(tempfile.mkdtemp(prefix="pktfate-everywhere-"))
    into.mkdir(parents=True, exist_ok=True)
    try:
        recordings = record_everywhere(scenario, prefix, duration, into, commentary)
        commentary.write(f"$ pktfate explain {' '.join(p.name for p in recordings.values())}"
                         "\n")
        commentary.flush()
        streams = [(host, path.open("rb")) for host, path in recordings.items()]
        try:
            return run_explain_merged(streams, sys.stdout, json_out)
        finally:
            for _, stream in streams:
                stream.close()
    finally:
        if not keep_in:
            shutil.rmtree(into, ignore_errors=True)
