"""The lab's incidents, defined once as data: what each machine runs. The
namespace lab (tracer/lab.py) applies them with `ip netns exec`; the Vagrant lab
applies the same commands over ssh (`pktfate lab script NAME --host server`).

Commands are shell lines with {placeholders} from ADDRESSES and INTERFACES, and
{python}: the interpreter pktfate runs under (for the lab's own listeners).
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field

HOSTS = ("client", "router", "server")

# The lab's addressing; the Vagrant lab uses the same networks.
ADDRESSES = {
    "client_ip": "10.0.1.2",
    "router_client_ip": "10.0.1.1",
    "router_server_ip": "10.0.2.1",
    "server_ip": "10.0.2.2",
    "client_ip6": "fd00:1::2",
    "router_client_ip6": "fd00:1::1",
    "router_server_ip6": "fd00:2::1",
    "server_ip6": "fd00:2::2",
    "spoofed_ip6": "2001:db8::55",  # documentation range: only ever routed inside the lab
    "spoofed_net6": "2001:db8::/64",
    "client_net": "10.0.1.0/24",
    "server_net": "10.0.2.0/24",
    "port": "80",
    "udp_port": "53",
    "spoofed_net": "192.0.2.0/24",  # documentation range: only ever routed inside the lab
    "spoofed_ip": "192.0.2.55",
    "www": "/run/pktfate/www",
    # A container behind the server (its own namespace, reached over a veth), the
    # target of the server's port mappings: nat_port on the server -> backend_ip:port.
    "backend_gw": "172.30.0.1",
    "backend_ip": "172.30.0.2",
    "backend_gw6": "fd00:30::1",
    "backend_ip6": "fd00:30::2",
    "backend_absent": "172.30.0.9",  # in the backend's network, held by nobody
    "nat_port": "8100",
}

# The lab's interfaces by role: the namespace lab's names. The Vagrant lab's VMs
# name theirs otherwise; `pktfate lab apply` finds them by address.
INTERFACES = {
    "client_if": "eth0",
    "router_client_if": "eth-c",
    "router_server_if": "eth-s",
    "server_if": "eth0",
    # The backend's namespace, made by the scenarios that need it; each lab names
    # its own (the namespace lab with its prefix).
    "backend_ns": "pktfate-backend",
}

HTTP_SERVICE = "python3 -m http.server --bind 0.0.0.0 {port} --directory {www}"
# Both families: '::' with IPV6_V6ONLY off (Linux's default) takes IPv4 too.
HTTP6_SERVICE = "python3 -m http.server --bind :: {port} --directory {www}"
# A listener that never accepts, with a queue of one: the accept queue fills up.
STALLED_SERVICE = ("python3 -c \"import socket, time; s = socket.socket(); "
                   "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
                   "s.bind(('0.0.0.0', {port})); s.listen(1); time.sleep(86400)\"")
# A UDP socket with a tiny receive buffer that is never read.
UNREAD_UDP_SERVICE = ("python3 -c \"import socket, time; s = socket.socket(socket.AF_INET, "
                      "socket.SOCK_DGRAM); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, "
                      "1024); s.bind(('0.0.0.0', {udp_port})); time.sleep(86400)\"")
# Another tool's XDP program that drops TCP to {port} (IPv4 without options): loaded
# with the distro's bcc, so it runs under /usr/bin/python3. It keeps the interface's
# XDP slot, which pktfate then leaves alone.
XDP_DROP_SERVICE = (
    "/usr/bin/python3 -c \"import time; from bcc import BPF; b = BPF(text='"
    "int drop_port(struct xdp_md *c) {{ unsigned char *p = (void *)(long)c->data; "
    "if ((void *)(p + 38) > (void *)(long)c->data_end) return XDP_PASS; "
    "if (p[12] == 8 && p[13] == 0 && p[23] == 6 && p[36] == 0 && p[37] == {port}) "
    "return XDP_DROP; return XDP_PASS; }}'); "
    "b.attach_xdp('{server_if}', b.load_func('drop_port', BPF.XDP), BPF.XDP_FLAGS_SKB_MODE); "
    "time.sleep(86400)\"")
# Another tool's tc program on the server's egress that drops the SYN-ACKs of {port}
# (IPv4 without options): a cls_bpf filter on a clsact qdisc, loaded with bcc and
# attached with pyroute2 by the lab's interpreter (which sees both). The filter
# stays with the interface after the process ends; the namespace goes with the lab.
TC_EGRESS_DROP_SERVICE = (
    "{python} -c \"import time; from bcc import BPF; from pyroute2 import IPRoute; "
    "b = BPF(text='int drop_synack(struct __sk_buff *s) {{ "
    "unsigned char *p = (void *)(long)s->data; "
    "if ((void *)(p + 48) > (void *)(long)s->data_end) return 0; "
    "if (p[12] == 8 && p[13] == 0 && p[23] == 6 && p[34] == 0 && p[35] == {port} "
    "&& (p[47] & 0x12) == 0x12) return 2; return 0; }}'); "
    "f = b.load_func('drop_synack', BPF.SCHED_CLS); ip = IPRoute(); "
    "i = ip.link_lookup(ifname='{server_if}')[0]; ip.tc('add', 'clsact', i); "
    "ip.tc('add-filter', 'bpf', i, ':1', fd=f.fd, name=f.name, parent='ffff:fff3', "
    "classid=1, direct_action=True); time.sleep(86400)\"")
TC_EGRESS_READY = ("tc filter show dev {server_if} egress | grep -q drop_synack",)
# The server maps its port {nat_port} to a container, as Docker's -p does: a
# namespace behind a veth, and a DNAT rule. `ip netns add` inside the server's
# namespace makes a namespace like any other; the veth's far end goes into it.
BACKEND_SETUP = (
    "ip netns add {backend_ns}",
    "ip link add ctr0 type veth peer name eth0 netns {backend_ns}",
    "ip addr add {backend_gw}/24 dev ctr0 && ip link set ctr0 up",
    "ip netns exec {backend_ns} sh -c 'ip link set lo up && ip addr add {backend_ip}/24 dev "
    "eth0 && ip link set eth0 up && ip route add default via {backend_gw}'",
)


def port_mapping(forward: int, target: str = "{backend_ip}") -> tuple[str, ...]:
    """The backend, the server's forwarding setting, and its DNAT rule for
    {nat_port} to `target`:{port}."""
    return (*BACKEND_SETUP, f"sysctl -qw net.ipv4.ip_forward={forward}",
            "iptables -t nat -A PREROUTING -p tcp --dport {nat_port} -j DNAT "
            f"--to-destination {target}:{{port}}")


BACKEND_SERVICE = ("ip netns exec {backend_ns} python3 -m http.server --bind 0.0.0.0 {port} "
                   "--directory {www}")
BACKEND_LOOPBACK_SERVICE = ("ip netns exec {backend_ns} python3 -m http.server --bind 127.0.0.1 "
                            "{port} --directory {www}")
BACKEND_READY = ("ip netns exec {backend_ns} ss -Hltn 'sport = :{port}' | grep -q LISTEN",)
CURL_NAT_PORT = (
    "ping -c 2 -i 0.3 -W 1 {server_ip}",
    "curl -sS -m 3 -o /dev/null -w 'HTTP %{{http_code}}\\n' http://{server_ip}:{nat_port}/",
)

PING_AND_CURL = (
    "ping -c 3 -i 0.3 -W 1 {server_ip}",
    "curl -sS -m 3 -o /dev/null -w 'HTTP %{{http_code}}\\n' http://{server_ip}:{port}/",
)
PING6_AND_CURL6 = (
    "ping -6 -c 3 -i 0.3 -W 1 {server_ip6}",
    "curl -sS -m 3 -o /dev/null -w 'HTTP %{{http_code}}\\n' http://[{server_ip6}]:{port}/",
)
PING_AND_UDP = (
    "ping -c 3 -i 0.3 -W 1 {server_ip}",
    "for i in 1 2 3; do echo query | nc -u -w1 {server_ip} {udp_port}; done",
)


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    expect: str  # the cause pktfate's top finding on the server names
    # "kernel" (ip_forward), "userspace" (naive AF_PACKET forwarder),
    # "userspace-stale-ip" (the same, leaving the IP header checksum stale) or
    # "userspace-stale-arp" (the same, sending to a MAC address the server no longer has)
    router: str = "kernel"
    setup: dict[str, tuple[str, ...]] = field(default_factory=dict)
    services: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # What the client does in the demo: the traffic pktfate explains.
    traffic: tuple[str, ...] = PING_AND_CURL
    watch_port: str = "{port}"  # what pktfate watches
    watch_host: str = "server"  # where pktfate runs
    # Shell conditions the lab waits for after starting the services, per host.
    ready: dict[str, tuple[str, ...]] = field(default_factory=dict)
    service_port: str | None = None  # where the server's service listens, if not watch_port
    # Arguments of a `pktfate probe` from the client to the server that the demo runs.
    probe: tuple[str, ...] = ()

    @property
    def port(self) -> str:
        return self.watch_port.format(**ADDRESSES)

    def probe_args(self) -> list[str]:
        return [arg.format(**ADDRESSES) for arg in self.probe]

    @property
    def listening_port(self) -> str:
        return (self.service_port or self.watch_port).format(**ADDRESSES)

    def commands(self, section: str, host: str,
                 interfaces: dict[str, str] | None = None) -> list[str]:
        """The shell lines of `section` (setup, services, ready, traffic) for `host`,
        with the interface names of `interfaces` (default: the namespace lab's)."""
        lines = getattr(self, section).get(host, ()) if section != "traffic" else \
            (self.traffic if host == "client" else ())
        values = {**ADDRESSES, **INTERFACES, "python": shlex.quote(sys.executable),
                  **(interfaces or {})}
        return [line.format(**values) for line in lines]


SCENARIOS = {s.name: s for s in (
    Scenario(
        "checksum",
        "Ping works, TCP to :80 times out: the client's checksum offload and a naive "
        "forwarder leave a bad TCP checksum, and the server drops every SYN (TCP_CSUM).",
        expect="tcp-bad-checksum",
        router="userspace",
        setup={"client": ("ethtool -K {client_if} tx on",)},
        services={"server": (HTTP_SERVICE,)},
    ),
    Scenario(
        "no-listener",
        "Nothing listens on :80 on the server: the kernel answers each SYN with a RST.",
        expect="no-listener",
    ),
    Scenario(
        "firewall-drop",
        "The server's firewall drops TCP :80 silently; the client times out.",
        expect="firewall-drop",
        setup={"server": ("iptables -I INPUT -p tcp --dport {port} -j DROP",)},
        services={"server": (HTTP_SERVICE,)},
    ),
    Scenario(
        "firewall-reject",
        "The server's firewall rejects TCP :80 with a forged RST.",
        expect="firewall-reject",
        setup={"server": ("iptables -I INPUT -p tcp --dport {port} -j REJECT "
                          "--reject-with tcp-reset",)},
        services={"server": (HTTP_SERVICE,)},
    ),
    Scenario(
        "udp-checksum",
        "UDP through the naive forwarder keeps the client's offloaded (partial) checksum: "
        "the server drops every datagram (UDP_CSUM) while ping works.",
        expect="udp-bad-checksum",
        router="userspace",
        traffic=PING_AND_UDP,
        watch_port="{udp_port}",
    ),
    Scenario(
        "ip-checksum",
        "A forwarder decrements the TTL without updating the IP header checksum: the "
        "server drops everything from the client, ping included (IP_CSUM).",
        expect="ip-bad-checksum",
        router="userspace-stale-ip",
        services={"server": (HTTP_SERVICE,)},
    ),
    Scenario(
        "ttl-expired",
        "The client sends with a TTL of 1: the router answers ICMP time exceeded "
        "(watched on the router).",
        expect="ttl-expired",
        traffic=("ping -c 3 -i 0.3 -W 1 -t 1 {server_ip}",),
        watch_host="router",
    ),
    Scenario(
        "udp-no-listener",
        "Nothing listens on UDP :53: the kernel answers with ICMP port unreachable.",
        expect="no-listener",
        traffic=PING_AND_UDP,
        watch_port="{udp_port}",
    ),
    Scenario(
        "listen-overflow",
        "The service on :80 never accepts and its queue holds one: new connections are "
        "dropped while ping works.",
        expect="listen-overflow",
        services={"server": (STALLED_SERVICE,)},
        traffic=("ping -c 2 -i 0.3 -W 1 {server_ip}",
                 "for i in 1 2 3 4 5 6; do curl -s -m 2 -o /dev/null "
                 "http://{server_ip}:{port}/ & done; wait"),
    ),
    Scenario(
        "rp-filter",
        "Strict reverse-path filtering on the server drops SYNs whose source it would "
        "route elsewhere (a spoofed 192.0.2.55).",
        expect="rp-filter",
        setup={"server": ("ip link add rpf0 type veth peer name rpf1",
                          "ip link set rpf0 up", "ip link set rpf1 up",
                          "ip route add {spoofed_net} dev rpf0",
                          "sysctl -qw net.ipv4.conf.all.rp_filter=1",
                          "sysctl -qw net.ipv4.conf.{server_if}.rp_filter=1")},
        services={"server": (HTTP_SERVICE,)},
        traffic=("ping -c 2 -i 0.3 -W 1 {server_ip}",
                 "hping3 -S -p {port} -c 5 -i u100000 -a {spoofed_ip} {server_ip}"),
    ),
    Scenario(
        "not-for-this-host",
        "The forwarder sends to the server's old MAC address (a stale neighbour entry): "
        "frames reach the server's port but its kernel drops them as meant for another host.",
        expect="not-for-this-host",
        router="userspace-stale-arp",
        services={"server": (HTTP_SERVICE,)},
    ),
    Scenario(
        "xdp-drop",
        "Another tool's XDP program on the server's interface drops TCP :80 before the "
        "stack sees it (pktfate leaves that XDP slot alone and watches with tc and "
        "tracepoints).",
        expect="xdp-drop",
        services={"server": (HTTP_SERVICE, XDP_DROP_SERVICE)},
        ready={"server": ("ip link show {server_if} | grep -q xdp",)},
    ),
    Scenario(
        "busy-server",
        "The server's firewall drops TCP :8118, while noise from the client's source port "
        "8118 floods it: SYNs to a firewalled :9999, UDP to closed ports, ACKs to a closed "
        "port (answered with RSTs). Watching :8118, the service's drops come first and keep "
        "their own count.",
        expect="firewall-drop",
        setup={"server": ("iptables -A INPUT -p tcp --dport 8118 -j DROP",
                          "iptables -A INPUT -p tcp --dport 9999 -j DROP")},
        traffic=("hping3 -q -S -s 8118 -k -p 9999 -c 200 -i u2000 {server_ip}",
                 "hping3 -q -2 -s 8118 -k -p 7001 -c 20 -i u20000 {server_ip}",
                 "hping3 -q -A -s 8118 -k -p 7100 -c 20 -i u20000 {server_ip}",
                 "curl -sS -m 5 -o /dev/null http://{server_ip}:8118/"),
        watch_port="8118",
    ),
    Scenario(
        "ipset-ban",
        "The client's address is in an ipset the server's firewall drops (a ban list, "
        "as fail2ban keeps one): its SYNs to :80 are dropped silently; the rule names no "
        "port.",
        expect="firewall-drop",
        setup={"server": ("ipset create pktfate-banned hash:ip",
                          "ipset add pktfate-banned {client_ip}",
                          "iptables -I INPUT -p tcp -m set --match-set pktfate-banned src "
                          "-j DROP")},
        services={"server": (HTTP_SERVICE,)},
    ),
    Scenario(
        "default-deny",
        "The server's INPUT chain drops by policy (what ufw and firewalld leave): ping and "
        "established connections are accepted, no rule names :80, and its SYNs fall to the "
        "policy, silently.",
        expect="firewall-drop",
        setup={"server": ("iptables -A INPUT -i lo -j ACCEPT",
                          "iptables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED "
                          "-j ACCEPT",
                          "iptables -A INPUT -p icmp -j ACCEPT",
                          "iptables -P INPUT DROP")},
        services={"server": (HTTP_SERVICE,)},
    ),
    Scenario(
        "tc-egress-drop",
        "Another tool's tc program on the server's egress drops the SYN-ACKs of :80: the "
        "server answers every SYN, and its answers never leave (TC_EGRESS in "
        "__dev_queue_xmit, on the server itself).",
        expect="tc-drop",
        services={"server": (HTTP_SERVICE, TC_EGRESS_DROP_SERVICE)},
        ready={"server": TC_EGRESS_READY},
    ),
    Scenario(
        "no-route",
        "The server has lost its default route: SYNs arrive, but no SYN-ACK can be routed "
        "back to the client.",
        expect="no-route",
        # The lab's VMs reach the client's network by a route of its own, not the default.
        setup={"server": ("ip route del default",
                          "ip route del {client_net} 2>/dev/null || true")},
        services={"server": (HTTP_SERVICE,)},
    ),
    Scenario(
        "mtu",
        "The router's link to the server has an MTU of 1280 while both ends have 1500 and "
        "agree on 1460-byte segments: the router drops the large ones (DF set) and asks for "
        "smaller ones (watched on the router).",
        expect="mtu",
        setup={"router": ("ip link set {router_server_if} mtu 1280",)},
        services={"server": (HTTP_SERVICE,)},
        traffic=("ping -c 2 -i 0.3 -W 1 {server_ip}",
                 "head -c 20000 /dev/zero | curl -sS -m 3 -o /dev/null --data-binary @- "
                 "http://{server_ip}:{port}/"),
        watch_host="router",
    ),
    Scenario(
        "never-arrived",
        "The router drops TCP :80 on the way: the server sees the client's ping, never "
        "its SYNs.",
        expect="never-arrived",
        setup={"router": ("iptables -I FORWARD -p tcp --dport {port} -j DROP",)},
        services={"server": (HTTP_SERVICE,)},
    ),
    Scenario(
        "router-nat",
        "The router masquerades the client behind its own address (SNAT) and the service "
        "on :80 answers: healthy, its packets followed across the NAT by merging the "
        "hosts' recordings (lab demo --everywhere).",
        expect="healthy",
        setup={"router": ("iptables -t nat -A POSTROUTING -o {router_server_if} "
                          "-j MASQUERADE",)},
        services={"server": (HTTP_SERVICE,)},
    ),
    Scenario(
        "socket-buffer-full",
        "A UDP service that never reads, with a 1 KiB receive buffer: datagrams are "
        "dropped once the buffer is full.",
        expect="socket-buffer-full",
        services={"server": (UNREAD_UDP_SERVICE,)},
        traffic=("ping -c 2 -i 0.3 -W 1 {server_ip}",
                 "python3 -c \"import socket; s = socket.socket(socket.AF_INET, "
                 "socket.SOCK_DGRAM); [s.sendto(b'query', ('{server_ip}', {udp_port})) "
                 "for _ in range(40)]\""),
        watch_port="{udp_port}",
    ),
    Scenario(
        "path-filters",
        "Filters on the way, seen from the client: the router forges RSTs for TCP :22 in "
        "the server's name and drops UDP :53; the server's own firewall drops TCP :8080 "
        "(watched on the client, and probed from it). The same over IPv6 (ip6tables).",
        expect="forged-reset",
        setup={"router": tuple(f"{tool} -I FORWARD {rule}" for tool in ("iptables", "ip6tables")
                               for rule in ("-p tcp --dport 22 -j REJECT --reject-with tcp-reset",
                                            "-p udp --dport {udp_port} -j DROP")),
               "server": ("iptables -I INPUT -p tcp --dport 8080 -j DROP",
                          "ip6tables -I INPUT -p tcp --dport 8080 -j DROP")},
        services={"server": (HTTP6_SERVICE,)},
        traffic=("ping -c 3 -i 0.3 -W 1 {server_ip}",
                 "curl -sS -m 3 -o /dev/null http://{server_ip}:22/"),
        watch_port="22",
        watch_host="client",
        service_port="{port}",
        probe=("--port", "22/tcp", "--port", "{port}/tcp", "--port", "8080/tcp", "--port",
               "{udp_port}/udp"),
    ),
    Scenario(
        "syn-queue-full",
        "A SYN flood from a spoofed address that never completes the handshake (the router "
        "black-holes the answers) fills the SYN queue of the server's listener while "
        "syncookies are off: the client's SYNs are discarded without a trace.",
        expect="syn-queue-full",
        setup={"server": ("sysctl -qw net.ipv4.tcp_syncookies=0",),
               "router": ("ip route add blackhole {spoofed_net}",)},
        services={"server": (HTTP_SERVICE,)},
        traffic=("ping -c 2 -i 0.3 -W 1 {server_ip}",
                 "hping3 -S -p {port} -c 40 -i u10000 -a {spoofed_ip} {server_ip}",
                 "curl -sS -m 3 -o /dev/null http://{server_ip}:{port}/"),
    ),
    Scenario(
        "tcp-md5",
        "The server's listener requires a TCP MD5 signature from the client (as BGP "
        "speakers do); the client sends none, and every SYN is dropped (TCP_MD5NOTFOUND).",
        expect="tcp-md5",
        services={"server": ("{python} -m pktfate.lab.listeners md5 --port {port} "
                             "--peer {client_ip}",)},
    ),
    Scenario(
        "socket-filter",
        "A filter on the listening socket refuses everything, the way systemd's "
        "IPAddressDeny= (a cgroup BPF program) refuses its peers: SYNs are dropped at the "
        "socket (SOCKET_FILTER).",
        expect="socket-filter",
        services={"server": ("{python} -m pktfate.lab.listeners filtered --port {port}",)},
    ),
    Scenario(
        "cgroup-filter",
        "The service's cgroup runs an ingress BPF program that refuses every packet, as "
        "systemd's IPAddressDeny= does for a unit: SYNs are dropped at the socket "
        "(SOCKET_FILTER), and the program is named by its cgroup.",
        expect="socket-filter",
        services={"server": ("{python} -m pktfate.lab.listeners cgroup-filtered --port {port}",)},
    ),
    Scenario(
        "answers-lost",
        "The server's neighbour entry for its gateway is PERMANENT with a MAC address nobody "
        "has: SYNs arrive and SYN-ACKs leave, but they never reach the client, which keeps "
        "retrying.",
        expect="answers-lost",
        setup={"server": ("ip neigh replace {router_server_ip} lladdr 02:00:0a:00:02:77 "
                          "dev {server_if} nud permanent",)},
        services={"server": (HTTP_SERVICE,)},
        traffic=("ping -c 2 -i 0.3 -W 1 {server_ip}",
                 "curl -sS -m 4 -o /dev/null http://{server_ip}:{port}/"),
    ),
    Scenario(
        "pmtu-blackhole",
        "The router's link to the client has an MTU of 1280 and the router's ICMP "
        "'fragmentation needed' is filtered: connections open, small requests work, but "
        "the server's full-size segments never arrive (a path-MTU black hole).",
        expect="pmtu-blackhole",
        setup={"router": ("ip link set {router_client_if} mtu 1280",
                          "iptables -A OUTPUT -p icmp --icmp-type fragmentation-needed "
                          "-j DROP"),
               "server": ("head -c 300000 /dev/zero > {www}/big.bin",)},
        services={"server": (HTTP_SERVICE,)},
        traffic=("ping -c 2 -i 0.3 -W 1 {server_ip}",
                 "curl -sS -m 5 -o /dev/null http://{server_ip}:{port}/big.bin"),
    ),
    Scenario(
        "conntrack-invalid",
        "The server's firewall drops what conntrack calls INVALID and does not pick up "
        "connections it missed (nf_conntrack_tcp_loose=0): segments of connections it has "
        "no entry for, as after a conntrack flush or a failover, are dropped.",
        expect="conntrack-invalid",
        # The rule first: it loads nf_conntrack where nothing has yet (a fresh
        # boot), and with it the namespace's net.netfilter sysctls.
        setup={"server": ("iptables -A INPUT -m conntrack --ctstate INVALID -j DROP",
                          "sysctl -qw net.netfilter.nf_conntrack_tcp_loose=0")},
        services={"server": (HTTP_SERVICE,)},
        traffic=("ping -c 2 -i 0.3 -W 1 {server_ip}",
                 "hping3 -A -p {port} -c 5 -i u100000 {server_ip}"),
    ),
    Scenario(
        "firewall-drop-v6",
        "Over IPv6: the server's ip6tables drops TCP :80 silently; the client times out "
        "while ping -6 works.",
        expect="firewall-drop",
        setup={"server": ("ip6tables -I INPUT -p tcp --dport {port} -j DROP",)},
        services={"server": (HTTP6_SERVICE,)},
        traffic=PING6_AND_CURL6,
    ),
    Scenario(
        "no-listener-v6",
        "Over IPv6: nothing listens on :80 on the server: the kernel answers each SYN with "
        "a RST.",
        expect="no-listener",
        traffic=PING6_AND_CURL6,
    ),
    Scenario(
        "rp-filter-v6",
        "Over IPv6, where reverse-path filtering is a netfilter match (ip6tables -m "
        "rpfilter): SYNs from a source the server would route elsewhere (2001:db8::55, a "
        "second address of the client's) are dropped.",
        expect="rp-filter",
        setup={"client": ("ip -6 addr add {spoofed_ip6}/128 dev {client_if} nodad",),
               "router": ("ip -6 route add {spoofed_ip6}/128 via {client_ip6}",),
               "server": ("ip link add rpf0 type veth peer name rpf1",
                          "ip link set rpf0 up", "ip link set rpf1 up",
                          "ip -6 route add {spoofed_net6} dev rpf0",
                          "ip6tables -t raw -A PREROUTING -m rpfilter --invert -j DROP")},
        services={"server": (HTTP6_SERVICE,)},
        traffic=("ping -6 -c 2 -i 0.3 -W 1 {server_ip6}",
                 "curl -sS -m 3 -o /dev/null --interface {spoofed_ip6} "
                 "http://[{server_ip6}]:{port}/"),
    ),
    Scenario(
        "healthy-v6",
        "Over IPv6: a working web server behind a kernel router: every SYN is answered.",
        expect="healthy",
        services={"server": (HTTP6_SERVICE,)},
        traffic=PING6_AND_CURL6,
    ),
    Scenario(
        "forwarding-off",
        "The server maps its port 8100 to a container (DNAT to 172.30.0.2:80, as docker -p "
        "does) but IP forwarding is off: the rewritten SYNs are dropped (IP_INADDRERRORS) "
        "and the client times out.",
        expect="forwarding-off",
        setup={"server": port_mapping(0)},
        services={"server": (BACKEND_SERVICE,)},
        ready={"server": BACKEND_READY},
        traffic=CURL_NAT_PORT,
        watch_port="{nat_port}",
    ),
    Scenario(
        "nat-healthy",
        "The server maps its port 8100 to a container (DNAT to 172.30.0.2:80) and forwards: "
        "every SYN is answered by the container.",
        expect="healthy",
        setup={"server": port_mapping(1)},
        services={"server": (BACKEND_SERVICE,)},
        ready={"server": BACKEND_READY},
        traffic=CURL_NAT_PORT,
        watch_port="{nat_port}",
    ),
    Scenario(
        "nat-no-backend",
        "The server maps its port 8100 to 172.30.0.9:80, an address nobody holds (a "
        "container that is gone): the rewritten SYNs wait for an ARP answer that never "
        "comes and are dropped.",
        expect="nat-backend-unreachable",
        setup={"server": port_mapping(1, "{backend_absent}")},
        traffic=("ping -c 2 -i 0.3 -W 1 {server_ip}",
                 "curl -sS -m 5 -o /dev/null http://{server_ip}:{nat_port}/"),
        watch_port="{nat_port}",
    ),
    Scenario(
        "nat-backend-loopback",
        "The server maps its port 8100 to a container (DNAT to 172.30.0.2:80) and forwards, "
        "but the container's service listens on its own 127.0.0.1 only: the container's "
        "kernel answers each SYN with a RST, which comes back through the server.",
        expect="localhost-only",
        setup={"server": port_mapping(1)},
        services={"server": (BACKEND_LOOPBACK_SERVICE,)},
        ready={"server": BACKEND_READY},
        traffic=CURL_NAT_PORT,
        watch_port="{nat_port}",
    ),
    Scenario(
        "localhost-only",
        "The service on :80 listens on 127.0.0.1 only: SYNs to the server's address are "
        "answered with RSTs, while the service answers on the server itself.",
        expect="localhost-only",
        services={"server": ("python3 -m http.server --bind 127.0.0.1 {port} "
                             "--directory {www}",)},
    ),
    Scenario(
        "healthy",
        "A working web server behind a kernel router: every SYN is answered.",
        expect="healthy",
        services={"server": (HTTP_SERVICE,)},
    ),
)}
