"""The agent's records (pktfate agent): what the kernel counted, per namespace,
and what runs in each namespace. Typed between the agent's layers; the metric
names and label values are made from them in output/metrics.py alone."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Direction(enum.Enum):
    """Where a dropped packet came from (sk_buff.skb_iif: set once it arrived)."""

    RECEIVED = 1  # through a device: received, or being forwarded
    LOCAL = 2  # made on this host


class SentKind(enum.Enum):
    RST = 1
    ICMP = 2


class Runtime(enum.Enum):
    """What made a network namespace, read from its processes' cgroups."""

    HOST = "host"
    NETNS = "netns"  # a named namespace (ip netns add), no container
    DOCKER = "docker"
    CONTAINERD = "containerd"
    CRIO = "cri-o"
    PODMAN = "podman"
    KUBERNETES = "kubernetes"  # a pod, its runtime not told by the cgroup path
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class DropCount:
    netns: int
    reason: str | None  # the kernel's name; None where it has no drop reasons
    function: str  # the kernel function that freed the packet
    family: int  # 4, 6; 0 for a packet that is not IP
    proto: int  # the IP protocol number; 0 when not IP
    direction: Direction
    count: int


@dataclass(frozen=True)
class SentCount:
    netns: int
    kind: SentKind
    family: int
    icmp_type: int  # 0 for a RST
    icmp_code: int
    count: int


@dataclass(frozen=True)
class CounterSnapshot:
    """The kernel's tables, summed over CPUs, at one moment."""

    drops: tuple[DropCount, ...] = ()
    sent: tuple[SentCount, ...] = ()
    # Counts whose key found no room in its table: kept, under "other".
    drops_unkeyed: int = 0
    sent_unkeyed: int = 0
    ports_unkeyed: int = 0
    # (netns, watched port) -> its packets dropped and the answers refusing them
    port_failures: dict[tuple[int, int], int] = field(default_factory=dict)


@dataclass(frozen=True)
class Workload:
    """What runs in a network namespace."""

    runtime: Runtime
    container: str = ""  # the container's id, as the runtime names it
    pod_uid: str = ""  # Kubernetes: the pod's UID, from its kubepods cgroup
    pod: str = ""  # "namespace/name", where the node's API server told it
    name: str = ""  # a named namespace's name (/run/netns)
