"""`pktfate probe`, the live part: send the probes from raw sockets, see their
answers (and their own fate on this host) with the watch's BPF programs, and
report. The pure logic is in probe/plan.py."""

from __future__ import annotations

import errno
import random
import socket
import time
from collections.abc import Callable
from typing import TextIO

from ..config import WatchConfig
from ..errors import PktfateError
from ..host import firewall
from ..output.probe_report import write_probe_report
from ..session import WatchSession, require_root
from .plan import (
    ICMP_TYPES,
    Matcher,
    Probe,
    ProbeConfig,
    Track,
    conclude,
    family_of,
    icmp_echo,
    ip_header,
    proto_number,
    result,
    target_hop,
    tcp_syn,
    udp_datagram,
)


def _family(target: str) -> socket.AddressFamily:
    return socket.AF_INET6 if family_of(target) == 6 else socket.AF_INET


def source_address(target: str) -> str:
    """The address this host sends from towards `target` (no packet is sent)."""
    with socket.socket(_family(target), socket.SOCK_DGRAM) as s:
        try:
            s.connect((target, 9))
        except OSError as exc:
            raise PktfateError(f"no route to {target} from this host ({exc.strerror}): "
                               "check 'ip route get " + target + "'") from exc
        return s.getsockname()[0]


class Sender:
    """Builds and sends probes through one IPPROTO_RAW socket (send-only: it never
    receives, so it does not queue copies of the answers). For IPv6 too the socket
    takes the whole packet, header included (Linux since 4.5): the hop limit is the
    header's, set per probe like IPv4's TTL."""

    def __init__(self, target: str, source: str):
        self.target, self.source = target, source
        self.echo_id = random.randrange(1, 0xFFFF)
        self._next_port = random.randrange(33000, 60000)
        self._next_seq = 1
        self.sock = socket.socket(_family(target), socket.SOCK_RAW, socket.IPPROTO_RAW)

    def close(self) -> None:
        self.sock.close()

    def send(self, proto: str, port: int | None, ttl: int) -> Probe:
        if proto == "icmp":
            ident, self._next_seq = self._next_seq, self._next_seq + 1
            payload = icmp_echo(self.echo_id, ident, self.source, self.target)
        else:
            ident, self._next_port = self._next_port, self._next_port + 1
            assert port is not None
            payload = tcp_syn(self.source, self.target, ident, port, random.getrandbits(32)) \
                if proto == "tcp" else udp_datagram(self.source, self.target, ident, port)
        probe = Probe(proto, port, ttl, ident, random.randrange(1, 0xFFFF))
        number = int(ICMP_TYPES[family_of(self.target)].proto) if proto == "icmp" else \
            proto_number(proto)
        packet = ip_header(self.source, self.target, number, ttl, probe.ip_id,
                           len(payload)) + payload
        try:
            self.sock.sendto(packet, (self.target, 0))
        except OSError as exc:
            probe.send_error = exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
        return probe


def run_probe(config: ProbeConfig, stream: TextIO) -> int:
    from ..host.netlink import local_addresses, route_back

    require_root("probe", "raw sockets and BPF")
    source = source_address(config.target)
    oif = route_back(config.target).get("oif")
    watch = WatchConfig(ports=config.port_numbers, hosts=(config.target,),
                        protos=frozenset(config.protos) | {"icmp"}, xdp=False)
    rules_before = firewall.snapshot()
    sender = Sender(config.target, source)
    matcher = Matcher(config.target, local_addresses() | {source}, sender.echo_id)
    tracks = [Track(proto, port) for proto, port in config.tracks()]
    # The target's own distance comes from its echo replies: ask for some even when
    # ICMP is not among the protocols probed.
    reference = [] if "icmp" in config.protos else [Track("icmp", None, traced=True)]
    try:
        with WatchSession(watch, matcher.feed_batch, "probe",
                          "raw sockets and BPF") as session:
            _rounds(config, tracks + reference, sender, matcher, session)
    finally:
        sender.close()
    local_rules = [r for r in firewall.moved_verdict_rules(rules_before, firewall.snapshot())
                   if firewall.chain_of(r["rule"]).lower() == "output"]
    hops, what = target_hop(tracks + reference, config.target)
    results = [result(t, config.target, hops, local_rules, source, oif) for t in tracks]
    conclude(results, config.target, what)
    write_probe_report(stream, config, source, hops, what, results)
    return 0


def _rounds(config: ProbeConfig, tracks: list[Track], sender: Sender, matcher: Matcher,
            session: WatchSession) -> None:
    """Send a round of probes for every track, wait for its answers, repeat until
    no track has anything left to send."""
    while not session.stopped:
        sent: list[Probe] = []
        answered = set().union(*(t.router_hops() for t in tracks))
        for track in tracks:
            for ttl in track.plan_round(config.max_hops, answered):
                probe = sender.send(track.proto, track.port, ttl)
                track.probes.append(probe)
                matcher.add(probe)
                sent.append(probe)
        if not sent:
            return
        session.run(deadline=time.monotonic() + config.wait, done=_all_settled(sent))


def _all_settled(sent: list[Probe]) -> Callable[[], bool]:
    """Whether every probe of a round has its answer, or will never get one."""
    return lambda: all(p.answer or p.send_error or p.local_drop for p in sent)
