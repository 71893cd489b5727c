"""The Vagrant lab: its Vagrantfile validates with the distro's vagrant, its
scripts are shellcheck-clean, and what the VMs would run is run here, against
namespaces standing in for the three machines: provisioning, scenarios, reset."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pktfate.lab.scenarios import ADDRESSES

from .conftest import diagnosis

pytestmark = pytest.mark.integration
VAGRANT_DIR = Path(__file__).resolve().parents[2] / "vagrant"
SERVER = ADDRESSES["server_ip"]


def _vagrant_validate(tmp_path, **env) -> subprocess.CompletedProcess:
    # The dot-directory goes to a temporary place, not into the source tree.
    environ = dict(os.environ, VAGRANT_DOTFILE_PATH=str(tmp_path / "dot"),
                   VAGRANT_HOME=str(tmp_path / "home"), **env)
    return subprocess.run(["vagrant", "validate"], cwd=VAGRANT_DIR, env=environ,
                          capture_output=True, text=True, timeout=300)


def test_vagrantfile_validates(tmp_path):
    assert shutil.which("vagrant"), "vagrant is installed by 'make setup-dev'"
    proc = _vagrant_validate(tmp_path, VAGRANT_DEFAULT_PROVIDER="libvirt")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Vagrantfile validated successfully" in proc.stdout
    # The knobs are read, and checked: a wrong one stops vagrant with a message.
    proc = _vagrant_validate(tmp_path, PKTFATE_ROUTER_MODE="bogus")
    assert "PKTFATE_ROUTER_MODE must be kernel or userspace" in proc.stdout + proc.stderr


def test_scripts_are_shellcheck_clean():
    scripts = sorted(VAGRANT_DIR.glob("*.sh")) + sorted(VAGRANT_DIR.parent.glob("scripts/*.sh"))
    assert len(scripts) >= 3
    proc = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


@pytest.fixture(scope="module")
def standins(lab, tmp_path_factory):
    """Three bare namespaces with the lab's addresses, provisioned by provision.sh
    as the VMs would be (the package install skipped: it is done here already)."""
    lab.build()
    env = dict(os.environ, PKTFATE_SKIP_SETUP="1", PKTFATE_STANDIN=lab.prefix,
               PKTFATE_LAB_STATE=str(tmp_path_factory.mktemp("lab-state")),
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    try:
        for role in ("router", "server", "client"):
            proc = subprocess.run(lab.exec_argv(role, ["sh", str(VAGRANT_DIR / "provision.sh"),
                                                       role]),
                                  env=env, capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, proc.stderr
            assert f"provisioned as the {role}" in proc.stdout
        yield lab, env
    finally:
        subprocess.run(["sh", str(VAGRANT_DIR / "scenario.sh"), "reset"], env=env,
                       capture_output=True, timeout=120)


def scenario(env, name: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(["sh", str(VAGRANT_DIR / "scenario.sh"), name], env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_provisioning_refuses_the_wrong_role(standins):
    lab, env = standins
    proc = subprocess.run(lab.exec_argv("client", ["sh", str(VAGRANT_DIR / "provision.sh"),
                                                   "server"]),
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "holds the client's addresses, not the server's" in proc.stderr


def test_checksum_scenario_on_standins_then_reset(standins, watch):
    lab, env = standins
    out = scenario(env, "checksum").stdout
    assert out.count("checksum applied") == 3
    w = watch("--port", "80", host="server")
    curl = lab.sh("client", f"curl -sS -m 3 -o /dev/null http://{SERVER}/", check=False)
    assert curl.returncode == 28
    assert lab.sh("client", f"ping -c 2 -i 0.2 -W 1 {SERVER}", check=False).returncode == 0
    assert diagnosis(w.stop())[0]["cause"] == "tcp-bad-checksum"
    assert "tx-checksumming: on" in lab.sh("client", "ethtool -k eth0").stdout

    scenario(env, "reset")
    # Back to the provisioned state: the forwarder gone, the kernel forwarding, no
    # service left, the client's offload as it was.
    assert lab.sh("router", "sysctl -n net.ipv4.ip_forward").stdout.strip() == "1"
    curl = lab.sh("client", f"curl -sS -m 3 -o /dev/null http://{SERVER}/", check=False)
    assert curl.returncode == 7  # refused by the server's kernel: the path works again


def test_scenarios_change_and_reset_routes_and_firewalls(standins, watch):
    lab, env = standins
    scenario(env, "no-route")
    assert "default" not in lab.sh("server", "ip route").stdout
    w = watch("--port", "80", host="server")
    lab.sh("client", f"curl -sS -m 2 -o /dev/null http://{SERVER}/", check=False)
    assert diagnosis(w.stop())[0]["cause"] == "no-route"

    scenario(env, "path-filters")  # resets first: the route is back
    assert "default" in lab.sh("server", "ip route").stdout
    assert "--reject-with tcp-reset" in lab.sh("router", "iptables -S FORWARD").stdout
    scenario(env, "reset")
    assert lab.sh("router", "iptables -S FORWARD").stdout.strip() == "-P FORWARD ACCEPT"
    assert lab.sh("server", "iptables -S INPUT").stdout.strip() == "-P INPUT ACCEPT"
