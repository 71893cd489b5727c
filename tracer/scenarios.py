"""The lab's incidents, defined once as data: what each machine runs. The
namespace lab (tracer/lab.py) applies them with `ip netns exec`; the Vagrant lab
applies the same commands over ssh (`pktfate lab script NAME --host server`).

Commands are shell lines with {placeholders} from ADDRESSES.
"""

from __future__ import annotations

from dataclasses import dataclass, field

HOSTS = ("client", "router", "server")

# The lab's addressing; the Vagrant lab uses the same networks.
ADDRESSES = {
    "client_ip": "10.0.1.2",
    "router_client_ip": "10.0.1.1",
    "router_server_ip": "10.0.2.1",
    "server_ip": "10.0.2.2",
    "client_net": "10.0.1.0/24",
    "server_net": "10.0.2.0/24",
    "port": "80",
    "www": "/run/pktfate/www",
}

HTTP_SERVICE = "python3 -m http.server --bind 0.0.0.0 {port} --directory {www}"


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    expect: str  # the cause pktfate's top finding on the server names
    router: str = "kernel"  # "kernel" (ip_forward) or "userspace" (naive AF_PACKET forwarder)
    setup: dict[str, tuple[str, ...]] = field(default_factory=dict)
    services: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # What the client does in the demo: the traffic pktfate explains.
    traffic: tuple[str, ...] = (
        "ping -c 3 -i 0.3 -W 1 {server_ip}",
        "curl -sS -m 3 -o /dev/null -w 'HTTP %{{http_code}}\\n' http://{server_ip}:{port}/",
    )

    def commands(self, section: str, host: str) -> list[str]:
        lines = getattr(self, section).get(host, ()) if section != "traffic" else \
            (self.traffic if host == "client" else ())
        return [line.format(**ADDRESSES) for line in lines]


SCENARIOS = {s.name: s for s in (
    Scenario(
        "checksum",
        "Ping works, TCP to :80 times out: the client's checksum offload and a naive "
        "forwarder leave a bad TCP checksum, and the server drops every SYN (TCP_CSUM).",
        expect="tcp-bad-checksum",
        router="userspace",
        setup={"client": ("ethtool -K eth0 tx on",)},
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
        "healthy",
        "A working web server behind a kernel router: every SYN is answered.",
        expect="healthy",
        services={"server": (HTTP_SERVICE,)},
    ),
)}
