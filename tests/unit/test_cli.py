"""The command line's contract for bad input: one line, exit status 2."""

import subprocess
import sys

import pytest
from click.testing import CliRunner

from tracer.cli import cli


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tracer", *args], capture_output=True,
                          text=True)


@pytest.mark.parametrize("args, words", [
    (("watch", "--port", "0"), "0 is not a port"),
    (("watch", "--port", "70000"), "70000 is not a port"),
    (("watch", "--port", "http"), "is not a port number"),
    (("watch", "--host", "10.0.0.300"), "is not an IPv4 or IPv6 address"),
    (("watch", "--proto", "sctp"), "sctp"),
    (("watch", "--duration", "-1"), "must be positive"),
    (("watch", "--sample-every", "0"), "sample-every"),
    (("probe", "10.0.2.2", "--port", "53/sctp"), "the protocol after '/' is tcp or udp"),
    (("probe", "10.0.2.2", "--port", "0/udp"), "0 is not a port"),
    (("probe", "10.0.2.2"), "give the port to probe"),
    (("probe", "10.0.2.2", "--port", "80", "--max-hops", "64"), "--max-hops"),
    (("probe", "example.org", "--port", "80"), "is not an IPv4 or IPv6 address"),
    (("lab", "apply", "nonsense"), "nonsense"),
])
def test_bad_input_is_one_line_and_status_2(args, words):
    proc = _run(*args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("pktfate: error:") and words in lines[0]


def test_watch_help_has_examples():
    result = CliRunner().invoke(cli, ["watch", "--help"])
    assert result.exit_code == 0
    assert "sudo pktfate watch --port 80" in result.output
    assert "--dump-bpf" not in result.output  # hidden


def test_explain_rejects_non_json(tmp_path):
    bad = tmp_path / "x.jsonl"
    bad.write_text("not json\n")
    proc = _run("explain", str(bad))
    assert proc.returncode == 2
    assert "is not JSON" in proc.stderr


def test_lab_script_prints_the_scenario_commands():
    result = CliRunner().invoke(cli, ["lab", "script", "firewall-drop", "--host", "server"])
    assert result.exit_code == 0
    assert "iptables -I INPUT -p tcp --dport 80 -j DROP" in result.output


def test_probe_help_has_examples():
    result = CliRunner().invoke(cli, ["probe", "--help"])
    assert result.exit_code == 0
    assert "sudo pktfate probe 10.0.2.2 --port 22/tcp" in result.output


def test_lab_script_uses_the_namespace_labs_interface_names():
    result = CliRunner().invoke(cli, ["lab", "script", "checksum", "--host", "client"])
    assert "ethtool -K eth0 tx on" in result.output
