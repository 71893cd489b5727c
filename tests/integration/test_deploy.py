"""What deploy/ holds, checked by the tools people use: the Kubernetes manifests
against Kubernetes' own schemas (kubernetes-validate), the alert rules with
Prometheus's promtool, and the image built here with buildah from a base made
with debootstrap (deploy/build-image.sh), run with podman: `pktfate --version`,
then an agent in it, privileged, scraped."""

from __future__ import annotations

import re
import subprocess
import time
import urllib.request
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from pktfate import __version__
from pktfate.cli.main import agent as agent_command
from pktfate.lab.runner import free_port
from tests.integration.conftest import podman_run
from tests.readme import README

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
RULES = ROOT / "deploy" / "prometheus" / "pktfate-rules.yml"
# Kubernetes releases whose schemas the manifests must satisfy: the oldest and
# the newest kubernetes-validate knows.
VERSIONS = sorted(kubernetes_validate.utils.all_versions(),
                  key=lambda v: tuple(int(x) for x in v.split(".")))


def _documents() -> list[tuple[str, dict]]:
    return [(path.name, doc) for path in sorted(KUBE.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def _by_kind() -> dict[str, dict]:
    return {doc["kind"]: doc for _, doc in _documents()}


@pytest.mark.parametrize("version", [VERSIONS[0], VERSIONS[-1]])
def test_the_manifests_validate_against_kubernetes_schemas(version):
    kinds = set()
    for name, doc in _documents():
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a custom resource: checked against the Service below
        kubernetes_validate.validate(doc, version, strict=True)
        kinds.add(doc["kind"])
        assert name
    assert kinds == {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                     "DaemonSet", "Service"}


def test_the_daemonset_service_and_servicemonitor_agree():
    kinds = _by_kind()
    daemonset, service, monitor = kinds["DaemonSet"], kinds["Service"], kinds["ServiceMonitor"]
    pod = daemonset["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert daemonset["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    service_labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service_labels.items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
    [port] = service["spec"]["ports"]
    assert monitor["spec"]["endpoints"][0]["port"] == port["name"]
    container = pod["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"metrics": 9542}
    assert pod["spec"]["serviceAccountName"] == kinds["ServiceAccount"]["metadata"]["name"]
    assert pod["spec"]["hostPID"] and pod["spec"]["hostNetwork"]
    security = container["securityContext"]
    assert security["privileged"] is False and security["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m.get("readOnly", False) for m in container["volumeMounts"]}
    for path in ("/sys/kernel/btf", "/sys/fs/bpf", "/lib/modules", "/usr/src"):
        assert mounts[path] is True, path
    # The agent's own command line accepts the DaemonSet's arguments.
    args = container["args"]
    assert args[0] == "agent"
    agent_command.make_context("agent", list(args[1:]))
    assert "--listen" in args and args[args.index("--listen") + 1] == "0.0.0.0:9542"


def test_the_alert_rules_load_in_promtool_and_are_the_readme_s():
    checked = subprocess.run(["promtool", "check", "rules", str(RULES)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 3 rules found" in checked.stdout
    assert RULES.read_text() in README.read_text()
    for metric in re.findall(r"\b(pktfate_[a-z_]+)", RULES.read_text()):
        assert f"`{metric}`" in README.read_text(), metric


def test_the_image_runs_pktfate(agent_image):
    image = agent_image
    ran = subprocess.run(podman_run("--rm", "--network", "none", image, "--version"),
                         capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[0] == f"pktfate {__version__}"
    assert "bcc: 0." in ran.stdout


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return answer.read().decode()


def test_an_agent_in_the_image_counts_and_serves(agent_image, tmp_path):
    """Privileged, with the host's PID and network namespaces and the mounts the
    DaemonSet gives: the agent in the image counts a refused connection on the
    host's loopback, and its page parses."""
    port, closed = free_port(), free_port()
    name = f"pktfate-test-{port}"
    mounts = ["/sys/kernel/btf", "/sys/kernel/tracing", "/lib/modules", "/usr/src"]
    argv = podman_run("-d", "--rm", "--name", name, "--privileged", "--pid", "host",
                      "--network", "host")
    for path in mounts:
        argv += ["-v", f"{path}:{path}:ro"]
    argv += ["-v", f"{tmp_path}:/var/cache/pktfate", agent_image,
             "agent", "--listen", f"127.0.0.1:{port}"]
    started = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    try:
        deadline = time.monotonic() + 300  # a cold start compiles the programs
        page = None
        while page is None:
            try:
                page = _scrape(port)
            except OSError:
                assert time.monotonic() < deadline, subprocess.run(
                    ["podman", "logs", name], capture_output=True, text=True).stderr
                time.sleep(0.5)
        subprocess.run(["curl", "-s", "-m", "1", f"http://127.0.0.1:{closed}/"],
                       capture_output=True, timeout=30)
        time.sleep(0.5)
        samples = [s for fam in text_string_to_metric_families(_scrape(port))
                   for s in fam.samples]
        assert [s for s in samples if s.name == "pktfate_build_info"]
        assert sum(s.value for s in samples if s.name == "pktfate_drops_total"
                   and s.labels["reason"] == "NO_SOCKET" and s.labels["proto"] == "tcp") >= 1
        assert sum(s.value for s in samples if s.name == "pktfate_sent_total"
                   and s.labels["kind"] == "rst") >= 1
    finally:
        subprocess.run(["podman", "stop", "-t", "10", name], capture_output=True, timeout=120)
        subprocess.run(["podman", "rm", "-f", name], capture_output=True, timeout=60)
