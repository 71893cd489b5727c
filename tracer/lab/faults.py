"""The fault matrix: lab scenarios composed from four independent choices, so that
pktfate's model is tested rather than its patterns. A cell is topology x family x
fault x noise; the cause pktfate must name follows from the fault alone, whatever
the rest (FAULTS: the expected cause). The lab builds a cell like any scenario.

- topology: `routed` (the server's own service on :80, the client behind the
  router) or `dnat-local` (the server publishes :8100 to a container, a namespace
  of its own behind a veth, as `docker -p` does);
- family: `v4` or `v6` (the client's traffic; the noise is IPv4 in both: hping3);
- fault: none, a DROP rule, a REJECT rule, a chain's DROP policy, no listener, the
  service bound to loopback only, another tool's tc program dropping the answers
  at egress;
- noise: none, or a flood from the client's source port equal to the watched one
  (SYNs to a firewalled port, ACKs to a closed one).

`pairwise()` is a subset in which every pair of choices of two factors appears in
some cell: what `make test` runs; `make fault-matrix` runs every cell."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from .scenarios import BACKEND_SETUP, Scenario

TOPOLOGIES = ("routed", "dnat-local")
FAMILIES = ("v4", "v6")
FAULTS = {  # fault -> the cause pktfate must name first
    "none": "healthy",
    "drop": "firewall-drop",
    "reject": "firewall-reject",
    "policy": "firewall-drop",
    "no-listener": "no-listener",
    "loopback-only": "localhost-only",
    "egress-drop": "tc-drop",
}
NOISES = ("quiet", "flood")


@dataclass(frozen=True)
class Cell:
    topology: str
    family: str
    fault: str
    noise: str

    @property
    def name(self) -> str:
        return f"{self.topology}-{self.family}-{self.fault}-{self.noise}"

    @property
    def expect(self) -> str:
        return FAULTS[self.fault]


def cells() -> list[Cell]:
    return [Cell(*choice) for choice in itertools.product(TOPOLOGIES, FAMILIES, FAULTS, NOISES)]


def pairwise() -> list[Cell]:
    """Cells in which every pair of values of two factors appears at least once,
    chosen greedily (the cell covering most pairs not yet covered first)."""
    def pairs(cell: Cell) -> set[tuple[tuple[int, str], tuple[int, str]]]:
        values = list(enumerate((cell.topology, cell.family, cell.fault, cell.noise)))
        return set(itertools.combinations(values, 2))

    left = set().union(*(pairs(cell) for cell in cells()))
    chosen: list[Cell] = []
    while left:
        best = max(cells(), key=lambda cell: len(pairs(cell) & left))
        chosen.append(best)
        left -= pairs(best)
    return chosen


# ---------------------------------------------------------------- the parts of a cell

_TOOLS = {"v4": "iptables", "v6": "ip6tables"}
_BACKEND6_SETUP = (
    "ip addr add {backend_gw6}/64 dev ctr0 nodad",
    "ip netns exec {backend_ns} sh -c 'ip addr add {backend_ip6}/64 dev eth0 nodad && "
    "ip route add default via {backend_gw6}'",
    "sysctl -qw net.ipv6.conf.all.forwarding=1",
)


def _service(bind: str, port: str, where: str) -> str:
    run = f"python3 -m http.server --bind {bind} {port} --directory {{www}}"
    return f"ip netns exec {{backend_ns}} {run}" if where == "backend" else run


def _egress_drop(port: int) -> str:
    """Another tool's tc program on the server's egress that drops its SYN-ACKs from
    `port`, IPv4 and IPv6 alike (without options)."""
    hi, lo = port >> 8, port & 0xFF
    return (
        "{python} -c \"import time; from bcc import BPF; from pyroute2 import IPRoute; "
        "b = BPF(text='int drop_synack(struct __sk_buff *s) {{ "
        "unsigned char *p = (void *)(long)s->data; int t = 0; "
        "if ((void *)(p + 68) > (void *)(long)s->data_end) return 0; "
        "if (p[12] == 8 && p[13] == 0 && p[23] == 6) t = 34; "
        "if (p[12] == 0x86 && p[13] == 0xdd && p[20] == 6) t = 54; "
        f"if (t == 34 && p[34] == {hi} && p[35] == {lo} && (p[47] & 0x12) == 0x12) return 2; "
        f"if (t == 54 && p[54] == {hi} && p[55] == {lo} && (p[67] & 0x12) == 0x12) return 2; "
        "return 0; }}'); "
        "f = b.load_func('drop_synack', BPF.SCHED_CLS); ip = IPRoute(); "
        "i = ip.link_lookup(ifname='{server_if}')[0]; ip.tc('add', 'clsact', i); "
        "ip.tc('add-filter', 'bpf', i, ':1', fd=f.fd, name=f.name, parent='ffff:fff3', "
        "classid=1, direct_action=True); time.sleep(86400)\"")


def _firewall(cell: Cell) -> tuple[str, ...]:
    """The fault's rules, where the watched packets meet them: INPUT for the
    server's own service, FORWARD for a published port."""
    tool = _TOOLS[cell.family]
    if cell.topology == "routed":
        chain, match = "INPUT", "-p tcp --dport {port}"
    else:
        backend = "{backend_ip}" if cell.family == "v4" else "{backend_ip6}"
        chain, match = "FORWARD", f"-p tcp -d {backend} --dport {{port}}"
    if cell.fault == "drop":
        return (f"{tool} -I {chain} {match} -j DROP",)
    if cell.fault == "reject":
        return (f"{tool} -I {chain} {match} -j REJECT --reject-with tcp-reset",)
    if cell.fault == "policy":
        icmp = "icmp" if cell.family == "v4" else "ipv6-icmp"
        return (f"{tool} -A {chain} -i lo -j ACCEPT",
                f"{tool} -A {chain} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
                f"{tool} -A {chain} -p {icmp} -j ACCEPT",
                f"{tool} -P {chain} DROP")
    return ()


def _topology(cell: Cell) -> tuple[tuple[str, ...], str, str]:
    """(setup, the watched port, where the service runs)."""
    if cell.topology == "routed":
        return (), "{port}", "server"
    tool = _TOOLS[cell.family]
    target = "{backend_ip}:{port}" if cell.family == "v4" else "[{backend_ip6}]:{port}"
    setup = (*BACKEND_SETUP, *(_BACKEND6_SETUP if cell.family == "v6" else ()),
             "sysctl -qw net.ipv4.ip_forward=1",
             f"{tool} -t nat -A PREROUTING -p tcp --dport {{nat_port}} -j DNAT "
             f"--to-destination {target}")
    return setup, "{nat_port}", "backend"


def _traffic(cell: Cell, port: str) -> tuple[str, ...]:
    flood = ("hping3 -q -S -s {watched} -k -p 9999 -c 100 -i u2000 {server_ip}",
             "hping3 -q -A -s {watched} -k -p 7100 -c 10 -i u20000 {server_ip}") \
        if cell.noise == "flood" else ()
    if cell.family == "v4":
        main = ("ping -c 2 -i 0.3 -W 1 {server_ip}",
                f"curl -sS -m 4 -o /dev/null http://{{server_ip}}:{port}/")
    else:
        main = ("ping -6 -c 2 -i 0.3 -W 1 {server_ip6}",
                f"curl -sS -m 4 -o /dev/null http://[{{server_ip6}}]:{port}/")
    return tuple(line.replace("{watched}", port) for line in (*flood, *main))


def scenario(cell: Cell) -> Scenario:
    """The cell as a lab scenario."""
    setup, port, where = _topology(cell)
    setup = (*setup, *_firewall(cell))
    if cell.noise == "flood":
        setup = (*setup, "iptables -I INPUT -p tcp --dport 9999 -j DROP")
    bind = "0.0.0.0" if cell.family == "v4" else "::"
    if cell.fault == "loopback-only":
        bind = "127.0.0.1" if cell.family == "v4" else "::1"
    services: tuple[str, ...] = () if cell.fault == "no-listener" else \
        (_service(bind, "{port}", where),)
    ready: tuple[str, ...] = ()
    if services:  # the service listening, where it runs
        netns = "ip netns exec {backend_ns} " if where == "backend" else ""
        ready = (f"{netns}ss -Hltn 'sport = :{{port}}' | grep -q LISTEN",)
    if cell.fault == "egress-drop":
        number = 80 if cell.topology == "routed" else 8100
        services = (*services, _egress_drop(number))
        ready = (*ready, "tc filter show dev {server_if} egress | grep -q drop_synack")
    return Scenario(cell.name, f"fault matrix: {cell.topology}, {cell.family}, {cell.fault}, "
                    f"{cell.noise}", expect=cell.expect, setup={"server": setup},
                    services={"server": services}, ready={"server": ready} if ready else {},
                    traffic=_traffic(cell, port), watch_port=port)
