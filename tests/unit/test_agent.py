"""The agent's logic without the kernel: workloads from recorded cgroup paths of
each runtime, the trigger's window and rate limits, the incident folder's
bounds, the metrics' labels and caps, and the README's table of metrics held
equal to what the collector exports. (The kernel's side, Prometheus and the
flood: tests/integration/test_agent.py.)"""

from __future__ import annotations

import os

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pktfate.agent.incidents import IncidentStore
from pktfate.agent.trigger import Trigger, TriggerPolicy
from pktfate.cli.options import ListenType
from pktfate.host.workloads import Workloads, pod_names_of, workload_of_cgroup
from pktfate.model.fleet import (
    CounterSnapshot,
    Direction,
    DropCount,
    Runtime,
    SentCount,
    SentKind,
    Workload,
)
from pktfate.output.metrics import (
    METRICS,
    AgentCollector,
    AgentState,
    LabelCaps,
    sent_what,
    workload_label,
)
from tests import readme

ID = "4f1c2a9e" * 8  # a container id: 64 hex digits
UID = "8a2c4f1e-1b2d-4c3e-9f00-1234567890ab"
UID_ = UID.replace("-", "_")

# /proc/PID/cgroup as each runtime leaves it (cgroup v2's one line, v1's several).
RECORDED = {
    "docker, systemd driver": (f"0::/system.slice/docker-{ID}.scope\n",
                               Workload(Runtime.DOCKER, ID)),
    "docker, cgroupfs driver (v1)": (f"12:memory:/docker/{ID}\n11:pids:/docker/{ID}\n",
                                     Workload(Runtime.DOCKER, ID)),
    "containerd under Kubernetes, systemd": (
        f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/"
        f"cri-containerd-{ID}.scope\n", Workload(Runtime.CONTAINERD, ID, UID)),
    "Kubernetes, cgroupfs driver (v1)": (
        f"11:pids:/kubepods/burstable/pod{UID}/{ID}\n",
        Workload(Runtime.KUBERNETES, ID, UID)),
    "cri-o": (f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
              f"crio-{ID}.scope\n", Workload(Runtime.CRIO, ID, UID)),
    "podman": (f"0::/machine.slice/libpod-{ID}.scope/container\n",
               Workload(Runtime.PODMAN, ID)),
    "podman, cgroupfs manager (hybrid, as on this machine)": (
        f"9:name=systemd:/libpod_parent/libpod-{ID}\n4:memory:/libpod_parent/libpod-{ID}\n"
        f"0::/libpod_parent/libpod-{ID}\n", Workload(Runtime.PODMAN, ID)),
    "nerdctl (containerd)": (f"0::/system.slice/nerdctl-{ID}.scope\n",
                             Workload(Runtime.CONTAINERD, ID)),
}


@pytest.mark.parametrize("case", RECORDED)
def test_each_runtimes_cgroup_names_its_container_and_pod(case):
    text, want = RECORDED[case]
    assert workload_of_cgroup(text) == want


@pytest.mark.parametrize("text", [
    "0::/user.slice/user-0.slice/session-3.scope\n",
    "0::/init.scope\n",
    f"0::/machine.slice/libpod-conmon-{ID}.scope\n",  # podman's monitor, not the container
])
def test_a_process_in_no_container_has_no_workload(text):
    assert workload_of_cgroup(text) is None


def test_pod_names_come_from_the_node_s_pod_list():
    pods = {"items": [{"metadata": {"uid": UID, "namespace": "shop", "name": "cart-7d9"}},
                      {"metadata": {"uid": "x"}}]}
    assert pod_names_of(pods) == {UID: "shop/cart-7d9"}


def test_workloads_read_from_proc_and_run_netns(tmp_path):
    proc, run = tmp_path / "proc", tmp_path / "netns"
    run.mkdir()
    (run / "web").write_text("")
    web_inode = (run / "web").stat().st_ino

    def process(pid: int, netns: int, cgroup: str) -> None:
        (proc / str(pid) / "ns").mkdir(parents=True)
        os.symlink(f"net:[{netns}]", proc / str(pid) / "ns" / "net")
        (proc / str(pid) / "cgroup").write_text(cgroup)

    process(1, 100, "0::/init.scope\n")
    process(40, 400, f"0::/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope\n")
    process(50, web_inode, "0::/user.slice\n")
    os.symlink("net:[100]", proc / "self")  # the agent's own: the host's
    (proc / "self").unlink()
    (proc / "self" / "ns").mkdir(parents=True)
    os.symlink("net:[100]", proc / "self" / "ns" / "net")
    workloads = Workloads(proc, run, pod_names={UID: "shop/cart-7d9"})
    assert workloads(100) == Workload(Runtime.HOST)
    assert workload_label(workloads(400)) == "pod:shop/cart-7d9"
    assert workloads(web_inode) == Workload(Runtime.NETNS, name="web")
    assert workloads(999) == Workload(Runtime.UNKNOWN)
    assert workloads.path_of(999) is None
    process(60, 999, f"0::/system.slice/docker-{ID}.scope\n")  # a container started since
    assert workloads(999) == Workload(Runtime.UNKNOWN)  # until the next pass over /proc
    workloads.refresh()
    assert workloads(999) == Workload(Runtime.DOCKER, ID)
    assert workloads.path_of(web_inode) == str(run / "web")
    assert workloads.path_of(400) == str(proc / "40" / "ns" / "net")


@pytest.mark.parametrize(("workload", "label"), [
    (Workload(Runtime.HOST), "host"),
    (Workload(Runtime.NETNS, name="web"), "netns:web"),
    (Workload(Runtime.DOCKER, ID), "docker:4f1c2a9e4f1c"),
    (Workload(Runtime.CRIO, ID, UID), f"pod:{UID}"),
    (Workload(Runtime.CONTAINERD, ID, UID, "shop/cart-7d9"), "pod:shop/cart-7d9"),
    (Workload(Runtime.UNKNOWN), "unknown"),
])
def test_workload_labels(workload, label):
    assert workload_label(workload) == label


# ---------------------------------------------------------------- the trigger

def test_the_trigger_fires_on_failures_within_the_window_once_per_cooldown():
    trigger = Trigger(TriggerPolicy(threshold=5, window=10, cooldown=60, max_per_hour=10))
    key = (7, 80)
    assert trigger.observe(0, {key: 100}) == []  # first sight: its past is unknown
    assert trigger.observe(1, {key: 104}) == []  # 4 in the window
    [alarm] = trigger.observe(2, {key: 105})
    assert (alarm.netns, alarm.port, alarm.failures, alarm.suppressed) == (7, 80, 5, False)
    assert trigger.observe(3, {key: 200}) == []  # cooling down
    assert trigger.observe(70, {key: 300})[0].failures == 100  # the window's oldest: t=62..


def test_failures_older_than_the_window_do_not_count():
    trigger = Trigger(TriggerPolicy(threshold=5, window=10, cooldown=0, max_per_hour=10))
    key = (7, 80)
    trigger.observe(0, {key: 0})
    trigger.observe(1, {key: 4})
    assert trigger.observe(20, {key: 5}) == []  # 4 of them 19 s ago


def test_rate_limits_suppress_but_count():
    trigger = Trigger(TriggerPolicy(threshold=1, window=10, cooldown=1, max_per_hour=2))
    keys = [(1, 80), (2, 80), (3, 80)]
    trigger.observe(0, dict.fromkeys(keys, 0))
    alarms = trigger.observe(1, {k: n for k, n in zip(keys, (5, 9, 7))})
    # One recorded, the port failing most; the others suppressed (one watch at a time).
    assert [(a.netns, a.suppressed) for a in alarms] == [(2, False), (3, True), (1, True)]
    assert [a.suppressed for a in trigger.observe(3, {k: 50 for k in keys})] == \
        [False, True, True]  # the second of the hour
    assert all(a.suppressed for a in trigger.observe(5, {k: 90 for k in keys}))
    assert all(a.suppressed for a in trigger.observe(7, {k: 99 for k in keys}, busy=True))


def test_the_hourly_cap_frees_after_an_hour():
    trigger = Trigger(TriggerPolicy(threshold=1, window=10, cooldown=1, max_per_hour=1))
    key = (1, 80)
    trigger.observe(0, {key: 0})
    assert not trigger.observe(1, {key: 1})[0].suppressed
    assert trigger.observe(5, {key: 2})[0].suppressed
    assert not trigger.observe(3602, {key: 3})[0].suppressed


# ---------------------------------------------------------------- the incidents

def test_the_incident_folder_keeps_the_newest_within_its_bounds(tmp_path):
    store = IncidentStore(tmp_path, keep=3, max_bytes=270)
    paths = [store.new_path(80, 7, now=1_700_000_000 + i) for i in range(5)]
    for path in paths:
        path.write_bytes(b"x" * 60)
    assert store.prune() == paths[:2]  # 5 files, 3 kept
    big = store.new_path(80, 7, now=1_800_000_000)
    big.write_bytes(b"x" * 200)
    # 3 x 60 + 200 > 270: the oldest go, never the one being written.
    assert store.prune(writing=big) == paths[2:4]
    assert store.recordings() == [paths[4], big]


def test_two_incidents_in_one_second_get_two_files(tmp_path):
    store = IncidentStore(tmp_path)
    first = store.new_path(80, 7, now=1_700_000_000)
    first.write_text("")
    assert store.new_path(80, 7, now=1_700_000_000) != first


# ---------------------------------------------------------------- the metrics

def _drop(netns: int, function: str = "nft_do_chain", count: int = 1) -> DropCount:
    return DropCount(netns, "NETFILTER_DROP", function, 4, 6, Direction.RECEIVED, count)


def _scrape(collector: AgentCollector) -> dict:
    registry = CollectorRegistry()
    registry.register(collector)
    page = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(page) for s in family.samples}


def _collector(snapshots: list[CounterSnapshot], caps: LabelCaps | None = None):
    state = AgentState("9.9", {"kernel": "6.x", "bcc": "0.26", "BTF": "present"})
    return AgentCollector(lambda: snapshots.pop(0), lambda _netns: Workload(Runtime.HOST),
                          state, caps or LabelCaps()), state


def test_label_caps_put_late_values_in_other_and_never_move_a_series():
    snaps = [CounterSnapshot(drops=(_drop(1, count=5), _drop(2, count=3))),
             CounterSnapshot(drops=(_drop(1, count=6), _drop(2, count=3), _drop(3, count=9),
                                    _drop(4, count=1)))]
    collector, _ = _collector(snaps, LabelCaps(netns=2))
    first, second = _scrape(collector), _scrape(collector)

    def by_netns(page: dict) -> dict:
        return {dict(labels)["netns"]: value for (name, labels), value in page.items()
                if name == "pktfate_drops_total"}

    assert by_netns(first) == {"1": 5, "2": 3}
    assert by_netns(second) == {"1": 6, "2": 3, "other": 10}  # 3 and 4: past the cap


def test_what_the_collector_exports_is_the_readme_s_table():
    snaps = [CounterSnapshot(drops=(_drop(1),),
                             sent=(SentCount(1, SentKind.ICMP, 4, 3, 3, 2),),
                             drops_unkeyed=4)]
    collector, state = _collector(snaps)
    state.findings["firewall-drop"] += 1
    state.incidents[(80, "recorded")] += 1
    page = _scrape(collector)
    exported = {}
    for name, labels in page:
        if name.endswith("_created"):
            continue
        exported.setdefault(name, set()).add(tuple(k for k, _ in labels))
    documented = readme.metrics()
    assert set(exported) == set(documented) == {m.name for m in METRICS}
    for metric in METRICS:
        kind, labels = documented[metric.name]
        assert (kind, sorted(labels)) == (metric.type, sorted(metric.labels)), metric.name
        assert exported[metric.name] == {tuple(sorted(metric.labels))}, metric.name
    assert page[("pktfate_sent_total", (("kind", "icmp"), ("netns", "1"),
                                         ("what", "port-unreachable"),
                                         ("workload", "host")))] == 2
    assert page[("pktfate_drops_total", tuple(sorted(dict.fromkeys(
        METRICS[0].labels, "other").items())))] == 4  # kept, under "other"


@pytest.mark.parametrize(("args", "what"), [
    ((SentKind.RST, 4, 0, 0), "rst"),
    ((SentKind.ICMP, 4, 3, 3), "port-unreachable"),
    ((SentKind.ICMP, 6, 1, 4), "port-unreachable"),
    ((SentKind.ICMP, 4, 3, 13), "administratively-prohibited"),
    ((SentKind.ICMP, 4, 40, 0), "icmp-40/0"),
])
def test_sent_answers_are_named_in_their_family(args, what):
    assert sent_what(*args) == what


@pytest.mark.parametrize(("text", "want"), [
    ("127.0.0.1:9542", ("127.0.0.1", 9542)), ("[::1]:9542", ("::1", 9542)),
    ("0.0.0.0:80", ("0.0.0.0", 80))])
def test_listen_addresses(text, want):
    assert ListenType().convert(text, None, None) == want


@pytest.mark.parametrize("text", ["9542", "localhost:9542", "127.0.0.1:0", "1.2.3.4:x"])
def test_bad_listen_addresses_are_refused(text):
    import click

    with pytest.raises(click.BadParameter):
        ListenType().convert(text, None, None)
