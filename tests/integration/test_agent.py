"""pktfate agent for real: its programs count in the kernel, Debian's own
Prometheus server scrapes it, and its armed watch records an incident.

- On the lab's firewall-drop incident, Prometheus's NETFILTER_DROP series of the
  server's namespace equals the DROP rule's own packet counter, exactly, and
  pktfate_findings_total{cause="firewall-drop"} is 1 once the armed watch ends;
  `explain` of its recording gives the top cause a live watch of the same
  scenario gives.
- Through the bench's flood, its counts stay exact (the kernel's own UDP NoPorts
  counter) and every scrape is well-formed and only grows.
- Nothing it loaded stays when it is killed; its expected failures are one line
  and exit status 2."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pktfate.kernel import bpfsys
from pktfate.lab.runner import AgentProcess, free_port, pktfate_argv
from tests.integration.conftest import diagnosis, flood_pairs, podman_run

pytestmark = pytest.mark.integration
SERVER = "10.0.2.2"


@pytest.fixture
def agent(tmp_path):
    """Start `pktfate agent ARGS` on the host, ready; every agent a test started is
    ended (SIGTERM, then SIGKILL) on the way out."""
    started: list[AgentProcess] = []

    def start(*args: str) -> AgentProcess:
        a = AgentProcess(list(args), free_port(), workdir=tmp_path)
        started.append(a)
        return a.start()

    yield start
    for a in started:
        if a.proc and a.proc.poll() is None:
            a.stop(subprocess.signal.SIGTERM, timeout=120)
        a.kill()


class Prometheus:
    """Debian's prometheus, on loopback, scraping targets every second."""

    def __init__(self, workdir: Path, targets: list[str]):
        self.port = free_port()
        config = workdir / "prometheus.yml"
        config.write_text(json.dumps({  # YAML is a superset of JSON
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "pktfate",
                                "static_configs": [{"targets": targets}]}]}))
        self.log = open(workdir / "prometheus.log", "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not self._ready():
            assert self.proc.poll() is None, (workdir / "prometheus.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "prometheus was not ready within 60 s"
            time.sleep(0.2)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2):
                return True
        except OSError:
            return False

    def query(self, promql: str) -> float | None:
        """The instant query's single value; None while it has none."""
        url = (f"http://127.0.0.1:{self.port}/api/v1/query?"
               + urllib.parse.urlencode({"query": promql}))
        with urllib.request.urlopen(url, timeout=10) as answer:
            data = json.load(answer)
        assert data["status"] == "success", data
        result = data["data"]["result"]
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def settled(self, promql: str, want: float, timeout: float = 60) -> float | None:
        """The query's value once it equals `want`, or its last value at the timeout:
        a scrape a second, so a count reaches Prometheus a second or two late."""
        deadline = time.monotonic() + timeout
        value = self.query(promql)
        while value != want and time.monotonic() < deadline:
            time.sleep(0.5)
            value = self.query(promql)
        return value

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def prometheus(tmp_path):
    servers: list[Prometheus] = []

    def start(*targets: str) -> Prometheus:
        folder = tmp_path / f"prometheus-{len(servers)}"
        folder.mkdir()
        servers.append(Prometheus(folder, list(targets)))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def netns_of(lab, host: str) -> int:
    return os.stat(f"/run/netns/{lab.ns(host)}").st_ino


def drop_rule_packets(lab) -> int:
    """The server's DROP rule's own packet counter."""
    out = lab.sh("server", "iptables -t filter -L INPUT -v -n -x").stdout
    rule = [line.split() for line in out.splitlines() if "DROP" in line and "dpt:80" in line]
    assert len(rule) == 1, out
    return int(rule[0][0])


def _log(agent: AgentProcess) -> list[dict]:
    text = agent.text
    return [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines()]


def _until_incident(lab, agent: AgentProcess, timeout: float = 240) -> dict:
    """Connection attempts from the client, one every half second, until the agent
    logs the end of the incident they caused (the armed watch records them too)."""
    deadline = time.monotonic() + timeout
    while True:
        lab.sh("client", f"curl -sS -m 0.5 -o /dev/null http://{SERVER}/", check=False)
        ended = [line for line in _log(agent) if line["event"].startswith("incident")]
        if ended:
            return ended[0]
        assert agent.proc.poll() is None, agent.proc.communicate()[1]
        assert time.monotonic() < deadline, _log(agent)


def test_prometheus_reads_the_drop_rules_count_and_the_armed_watchs_finding(
        lab, agent, prometheus, watch, tmp_path):
    lab.up("firewall-drop")
    incidents = tmp_path / "incidents"
    a = agent("--watch-port", "80", "--threshold", "3", "--window", "10",
              "--watch-duration", "5", "--incidents", str(incidents))
    prom = prometheus(f"127.0.0.1:{a.port}")
    incident = _until_incident(lab, a)

    server = netns_of(lab, "server")
    assert incident["event"] == "incident", incident
    assert incident["netns"] == server and incident["port"] == 80
    assert incident["workload"] == f"netns:{lab.ns('server')}"
    assert incident["top_cause"] == "firewall-drop"
    rule = drop_rule_packets(lab)
    assert rule > 0
    series = (f'sum(pktfate_drops_total{{reason="NETFILTER_DROP",netns="{server}",'
              'proto="tcp",direction="received"})')
    assert prom.settled(series, rule) == rule
    assert prom.settled('pktfate_findings_total{cause="firewall-drop"}', 1) == 1
    assert prom.query('pktfate_incidents_total{port="80",outcome="recorded"}') == 1
    assert prom.query("pktfate_build_info") == 1

    # The recording, as explain reads it, and a live watch of the same scenario.
    recording = Path(incident["recording"])
    assert recording.parent == incidents and recording.exists()
    explained = subprocess.run(pktfate_argv("explain", "--json", str(recording)),
                               capture_output=True, text=True, timeout=120)
    assert explained.returncode == 0, explained.stderr
    replayed = json.loads(explained.stdout.splitlines()[-1])["findings"]
    live = watch("--port", "80")
    lab.sh("client", f"hping3 -S -p 80 -c 5 -i u100000 {SERVER}", check=False)
    found = diagnosis(live.stop())
    assert replayed[0]["cause"] == found[0]["cause"] == "firewall-drop"


@pytest.fixture
def pairs():
    with flood_pairs("pa", 87) as both:
        yield both


def _no_socket_udp(page: str, netns: int) -> float:
    """pktfate_drops_total of UDP freed with NO_SOCKET in one namespace, summed."""
    total = 0.0
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            labels = sample.labels
            if (sample.name == "pktfate_drops_total" and labels["reason"] == "NO_SOCKET"
                    and labels["proto"] == "udp" and labels["netns"] == str(netns)):
                total += sample.value
    return total


def test_an_agent_through_the_flood_keeps_exact_counts_and_well_formed_scrapes(
        agent, pairs, record_property):
    watched, other = pairs
    a = agent()
    ns_watched = os.stat(f"/run/netns/{watched.b}").st_ino
    before_page = a.scrape()
    before = watched.udp_no_ports()
    start_count = _no_socket_udp(before_page, ns_watched)
    floods = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for argv in (
        watched.flood_argv(9, 0, 5, flows=1000), watched.flood_argv(9, 0, 5, flows=1000),
        other.flood_argv(9, 0, 5))]
    scrapes, last = 0, start_count
    try:
        while any(f.poll() is None for f in floods):
            page = a.scrape()  # parsed: a malformed page raises here
            value = _no_socket_udp(page, ns_watched)
            assert value >= last, "a counter went down"
            last, scrapes = value, scrapes + 1
            time.sleep(0.2)
    finally:
        for f in floods:
            if f.poll() is None:
                f.kill()
            f.communicate()
    dropped = watched.udp_no_ports() - before
    counted = _no_socket_udp(a.scrape(), ns_watched) - start_count
    record_property("report", f"agent through the flood: {dropped:,} drops in 5 s, "
                              f"{scrapes} scrapes during it")
    assert dropped > 0 and scrapes > 0
    assert counted == dropped  # exact: every drop counted in the kernel, none sampled
    page = a.scrape()
    unkeyed = [s.value for fam in text_string_to_metric_families(page) for s in fam.samples
               if s.name == "pktfate_unkeyed_total"]
    assert unkeyed == [0, 0, 0]


def test_nothing_the_agent_loaded_outlives_it_when_killed(agent):
    before = set(bpfsys.prog_ids())
    a = agent("--watch-port", "80")
    mine = set(bpfsys.prog_ids()) - before
    assert mine, "the agent loaded no program"
    a.kill()
    deadline = time.monotonic() + 30
    while mine & set(bpfsys.prog_ids()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not mine & set(bpfsys.prog_ids())


def test_a_port_in_use_is_one_line_and_status_2_with_nothing_left():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        before = set(bpfsys.prog_ids())
        proc = subprocess.run(pktfate_argv("agent", "--listen", f"127.0.0.1:{port}"),
                              capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--listen" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    deadline = time.monotonic() + 30
    while set(bpfsys.prog_ids()) - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not set(bpfsys.prog_ids()) - before


def test_a_podman_containers_drops_are_labelled_with_the_container(agent, agent_image):
    """A real container in a network namespace of its own: a connection to a
    closed port inside it is counted under that namespace, labelled podman and the
    container's id, as read from its process's cgroup."""
    a = agent()
    name = f"pktfate-workload-{a.port}"
    started = subprocess.run(podman_run(
        "-d", "--rm", "--name", name, "--network", "none", "--entrypoint", "bash", agent_image,
        "-c", "sleep 1; for i in 1 2 3; do (echo > /dev/tcp/127.0.0.1/9) 2>/dev/null; done;"
        " sleep 600"), capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    container = started.stdout.strip().splitlines()[-1]
    try:
        pid = subprocess.run(["podman", "inspect", "-f", "{{.State.Pid}}", name],
                             capture_output=True, text=True, check=True).stdout.strip()
        netns = os.stat(f"/proc/{pid}/ns/net").st_ino
        # A namespace made since the agent's last pass over /proc is "unknown" until
        # the next one (2 s at most).
        deadline, series = time.monotonic() + 60, []
        while not series or {s.labels["workload"] for s in series} == {"unknown"}:
            assert time.monotonic() < deadline, a.scrape()
            time.sleep(0.5)
            series = [s for fam in text_string_to_metric_families(a.scrape())
                      for s in fam.samples if s.name == "pktfate_drops_total"
                      and s.labels["netns"] == str(netns)
                      and s.labels["reason"] == "NO_SOCKET"]
        assert {s.labels["workload"] for s in series} == {f"podman:{container[:12]}"}
        assert sum(s.value for s in series) == 3
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True,
                       timeout=120)
