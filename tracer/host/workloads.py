"""What runs in each network namespace, read from the host: a namespace's
processes' cgroup paths name the container runtime and the container, and the
kubepods cgroups the pod's UID; named namespaces (ip netns add) are found in
/run/netns. Read only. Where the node's Kubernetes API is reachable from the
agent's pod (its service account), pod UIDs are named namespace/name
(pods_by_uid); the agent works without it.

The cgroup layouts recognised (cgroup v2's single line, or v1's lines):
- docker: .../docker-<id>.scope (systemd driver), /docker/<id> (cgroupfs)
- containerd: .../cri-containerd-<id>.scope, nerdctl-<id>.scope, /<namespace>/<id>
  under kubepods (cgroupfs)
- cri-o: .../crio-<id>.scope
- podman: .../libpod-<id>.scope (systemd), /libpod_parent/libpod-<id> (cgroupfs);
  its conmon's libpod-conmon-<id>.scope is not the container
- Kubernetes: kubepods...-pod<uid>.slice (systemd, the UID's dashes as
  underscores) or /kubepods/<class>/pod<uid>/ (cgroupfs)
"""

from __future__ import annotations

import json
import os
import re
import ssl
import time
import urllib.request
from pathlib import Path

from ..model.fleet import Runtime, Workload
from .namespaces import namespaces, netns_inode

_ID = r"([0-9a-f]{64})"
_RUNTIMES = (
    (re.compile(r"docker-" + _ID + r"\.scope"), Runtime.DOCKER),
    (re.compile(r"/docker/" + _ID), Runtime.DOCKER),
    (re.compile(r"cri-containerd-" + _ID + r"\.scope"), Runtime.CONTAINERD),
    (re.compile(r"nerdctl-" + _ID + r"\.scope"), Runtime.CONTAINERD),
    (re.compile(r"crio-" + _ID + r"\.scope"), Runtime.CRIO),
    (re.compile(r"libpod-" + _ID + r"(?:\.scope|/|$)"), Runtime.PODMAN),
)
_POD_UID = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_]"
                      r"[0-9a-f]{12})")
# Under kubepods with the cgroupfs driver, a container is the bare id after the pod.
_KUBE_BARE = re.compile(r"/pod[0-9a-f_-]{36}/" + _ID)


def workload_of_cgroup(text: str) -> Workload | None:
    """The container (and pod) a /proc/PID/cgroup names; None for a process in
    no container."""
    for line in text.splitlines():
        path = line.rpartition(":")[2]
        if "conmon" in path:
            continue
        pod = _POD_UID.search(path)
        uid = pod.group(1).replace("_", "-") if pod else ""
        for pattern, runtime in _RUNTIMES:
            found = pattern.search(path)
            if found:
                return Workload(runtime, container=found.group(1), pod_uid=uid)
        bare = _KUBE_BARE.search(path)
        if uid:
            return Workload(Runtime.KUBERNETES, container=bare.group(1) if bare else "",
                            pod_uid=uid)
    return None


def named_namespaces(run: Path = Path("/run/netns")) -> dict[int, str]:
    """ip netns's names: each bind mount's inode -> its name."""
    names = {}
    try:
        entries = sorted(run.iterdir())
    except OSError:
        return {}
    for entry in entries:
        try:
            names[entry.stat().st_ino] = entry.name
        except OSError:
            continue
    return names


class Workloads:
    """netns inode -> Workload. Once found, a namespace's workload is kept (a
    metric's labels must not change under it). A namespace not identified yet (a
    container started since the last pass) is "unknown" until the next pass over
    /proc, which comes at most every RESCAN seconds."""

    RESCAN = 2.0

    def __init__(self, proc: Path = Path("/proc"), run: Path = Path("/run/netns"),
                 pod_names: dict[str, str] | None = None):
        self.proc, self.run = proc, run
        self.pod_names = pod_names or {}  # pod UID -> "namespace/name"
        self.own = netns_inode("self", proc)
        # init's namespace; where it cannot be read (a sandbox), the agent's own
        # (on a node the DaemonSet shares the host's network).
        self.host = netns_inode(1, proc) or self.own
        self._known: dict[int, Workload] = {}
        self._holders: dict[int, int] = {}
        self._names: dict[int, str] = {}
        self._scanned = -self.RESCAN

    def refresh(self) -> None:
        """One pass over /proc and /run/netns."""
        self._holders = namespaces(self.proc)
        self._names = named_namespaces(self.run)
        self._scanned = time.monotonic()

    def path_of(self, netns: int) -> str | None:
        """A path that enters the namespace (nsenter --net=), or None when nothing
        holds it any more."""
        self.refresh()
        if netns in self._names:
            return str(self.run / self._names[netns])
        if netns == self.own:
            return str(self.proc / "self" / "ns" / "net")
        pid = self._holders.get(netns)
        return str(self.proc / str(pid) / "ns" / "net") if pid else None

    def __call__(self, netns: int) -> Workload:
        known = self._known.get(netns)
        if known is not None:
            return known
        if (netns not in self._holders and netns not in self._names
                and time.monotonic() - self._scanned >= self.RESCAN):
            self.refresh()
        found = self._look_up(netns)
        if found.runtime is not Runtime.UNKNOWN:
            self._known[netns] = found
        return found

    def _look_up(self, netns: int) -> Workload:
        if netns == self.host:
            return Workload(Runtime.HOST)
        pid = self._holders.get(netns)
        if pid is not None:
            try:
                found = workload_of_cgroup((self.proc / str(pid) / "cgroup").read_text())
            except OSError:
                found = None
            if found is not None:
                return Workload(found.runtime, found.container, found.pod_uid,
                                self.pod_names.get(found.pod_uid, ""))
        name = self._names.get(netns)
        if name:
            return Workload(Runtime.NETNS, name=name)
        return Workload(Runtime.UNKNOWN)


SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def pods_by_uid(node: str, account: Path = SERVICE_ACCOUNT,
                env: dict[str, str] | None = None, timeout: float = 5.0) -> dict[str, str]:
    """The node's pods, UID -> "namespace/name", from the Kubernetes API server
    through the pod's service account (deploy/kubernetes gives it the right to
    list pods); {} where there is none or the server does not answer: pods are
    then labelled by UID alone."""
    env = env if env is not None else dict(os.environ)
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    try:
        token = (account / "token").read_text().strip()
    except OSError:
        return {}
    if not host or not port:
        return {}
    context = ssl.create_default_context(cafile=str(account / "ca.crt"))
    url = (f"https://{host}:{port}/api/v1/pods?fieldSelector=spec.nodeName%3D{node}")
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as answer:
            return pod_names_of(json.load(answer))
    except (OSError, ValueError):
        return {}


def pod_names_of(pod_list: dict) -> dict[str, str]:
    """A PodList's pods, UID -> "namespace/name"."""
    names = {}
    for pod in pod_list.get("items", []):
        meta = pod.get("metadata", {})
        if meta.get("uid") and meta.get("name"):
            names[meta["uid"]] = f"{meta.get('namespace', 'default')}/{meta['name']}"
    return names
