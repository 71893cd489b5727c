"""The command line's contract for bad input: one line, exit status 2."""

import subprocess
import sys

import pytest
from click.testing import CliRunner

from pktfate.cli import cli

from ..bad_values import BAD_VALUES, cli_params


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pktfate", *args], capture_output=True,
                          text=True)


def _one_line_error(proc: subprocess.CompletedProcess, words: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("pktfate: error:") and words in lines[0], lines[0]


def test_every_option_of_every_command_has_a_bad_value():
    tried = {(bad.command, bad.param) for bad in BAD_VALUES}
    assert cli_params(cli) == tried


@pytest.mark.parametrize("bad", [b for b in BAD_VALUES if not b.runtime],
                         ids=lambda b: f"{b.command}:{b.param}")
def test_bad_value_is_one_line_and_status_2(bad):
    _one_line_error(_run(*bad.args), bad.words)


@pytest.mark.parametrize(("args", "words"), [
    (("watch", "--port", "70000"), "70000 is not a port"),
    (("watch", "--port", "http"), "is not a port number"),
    (("watch", "--ready-file", "/"), "is a directory"),
    (("probe", "10.0.2.2", "--port", "0/udp"), "0 is not a port"),
    (("probe", "10.0.2.2"), "give the port to probe"),
    (("probe", "10.0.2.2", "--port", "80", "--max-hops", "64"), "--max-hops"),
    (("explain", "/"), "Is a directory"),
])
def test_more_bad_input_is_one_line_and_status_2(args, words):
    _one_line_error(_run(*args), words)


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


def test_reasons_on_a_kernel_without_them_says_so_and_what_names_drops_instead(monkeypatch):
    # A 5.10 kernel: BTF present, no enum skb_drop_reason, no reason in the format file.
    from pktfate.kernel import discovery

    monkeypatch.setattr(discovery, "drop_reason_table", lambda: {})
    monkeypatch.setattr(discovery, "kernel_has_btf", lambda: True)
    result = CliRunner().invoke(cli, ["reasons"])
    assert result.exit_code == 0, result.output
    assert "has no drop reasons: skb:kfree_skb carries none before Linux 5.17" in result.output
    assert "tcp_v4_rcv" in result.output and "TCP_CSUM or NO_SOCKET" in result.output
    as_json = CliRunner().invoke(cli, ["reasons", "--json"])
    assert '"kind": "no-reasons"' in as_json.output and '"nf_hook_slow": ["NETFILTER_DROP"]' \
        in as_json.output

    monkeypatch.setattr(discovery, "kernel_has_btf", lambda: False)
    result = CliRunner().invoke(cli, ["reasons"])  # main() turns it into one line, status 2
    assert "has no BTF" in str(result.exception)
