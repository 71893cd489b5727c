"""`pktfate probe`, the live part: send the probes from raw sockets, see their
answers (and their own fate on this host) with the watch's BPF programs, and
report. The pure logic is in tracer/probe.py."""

from __future__ import annotations

import errno
import ipaddress
import os
import random
import socket
import time
from typing import TextIO

from . import firewall
from .config import WatchConfig
from .decode import Decoder
from .errors import PktfateError
from .output import write_probe_report
from .probe import (
    Matcher,
    Probe,
    ProbeConfig,
    Track,
    conclude,
    icmp_echo,
    ipv4_header,
    proto_number,
    result,
    target_hop,
    tcp_syn,
    udp_datagram,
)
from .watch import DRAIN_INTERVAL, IfNames, Stop


def source_address(target: str) -> str:
    """The address this host sends from towards `target` (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((target, 9))
        except OSError as exc:
            raise PktfateError(f"no route to {target} from this host ({exc.strerror}): "
                               "check 'ip route get " + target + "'") from exc
        return s.getsockname()[0]


class Sender:
    """Builds and sends probes through one IPPROTO_RAW socket (send-only: it never
    receives, so it does not queue copies of the answers)."""

    def __init__(self, target: str, source: str):
        self.target, self.source = target, source
        self.echo_id = random.randrange(1, 0xFFFF)
        self._next_port = random.randrange(33000, 60000)
        self._next_seq = 1
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)

    def close(self) -> None:
        self.sock.close()

    def send(self, proto: str, port: int | None, ttl: int) -> Probe:
        if proto == "icmp":
            ident, self._next_seq = self._next_seq, self._next_seq + 1
            payload = icmp_echo(self.echo_id, ident)
        else:
            ident, self._next_port = self._next_port, self._next_port + 1
            assert port is not None
            payload = tcp_syn(self.source, self.target, ident, port, random.getrandbits(32)) \
                if proto == "tcp" else udp_datagram(self.source, self.target, ident, port)
        probe = Probe(proto, port, ttl, ident, random.randrange(1, 0xFFFF))
        packet = ipv4_header(self.source, self.target, proto_number(proto), ttl, probe.ip_id,
                             len(payload)) + payload
        try:
            self.sock.sendto(packet, (self.target, 0))
        except OSError as exc:
            probe.send_error = exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
        return probe


def run_probe(config: ProbeConfig, stream: TextIO) -> int:
    from . import loader  # only here: the rest of the package imports without bcc
    from .kernel import probe_kernel
    from .ksyms import KernelSymbols

    if ipaddress.ip_address(config.target).version != 4:
        raise PktfateError("pktfate probe sends IPv4 probes only, for now: give an IPv4 address")
    if os.geteuid() != 0:
        raise PktfateError("pktfate probe needs root (raw sockets and BPF): run it with sudo")
    source = source_address(config.target)
    kernel = probe_kernel()
    watch = WatchConfig(ports=config.port_numbers, hosts=(config.target,),
                        protos=frozenset(config.protos) | {"icmp"}, xdp=False)
    loader.select_interfaces(watch)
    decoder = Decoder(kernel.drop_reason_name, KernelSymbols.load().name, IfNames(),
                      kernel.rst_reasons, time.time() - time.clock_gettime(time.CLOCK_MONOTONIC),
                      local_netns=kernel.netns)
    rules_before = firewall.snapshot()
    sender = Sender(config.target, source)
    matcher = Matcher(config.target, loader.local_addresses() | {source}, sender.echo_id)
    tracks = [Track(proto, port) for proto, port in config.tracks()]
    # The target's own distance comes from its echo replies: ask for some even when
    # ICMP is not among the protocols probed.
    reference = [] if "icmp" in config.protos else [Track("icmp", None, traced=True)]
    try:
        with Stop() as stop, loader.Tracer(watch, kernel,
                                           lambda raw: matcher.feed(decoder.decode(raw))) \
                as tracer:
            _rounds(config, tracks + reference, sender, matcher, tracer, stop)
    finally:
        sender.close()
    local_rules = [r for r in firewall.moved_verdict_rules(rules_before, firewall.snapshot())
                   if " OUTPUT " in r["rule"] or "chain output" in r["rule"].lower()]
    hops, what = target_hop(tracks + reference, config.target)
    results = [result(t, config.target, hops, what, local_rules) for t in tracks]
    conclude(results, config.target, what)
    write_probe_report(stream, config, source, hops, what, results)
    return 0


def _rounds(config: ProbeConfig, tracks: list[Track], sender: Sender, matcher: Matcher,
            tracer, stop) -> None:
    """Send a round of probes for every track, wait for its answers, repeat until
    no track has anything left to send."""
    while stop.signal is None:
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
        deadline = time.monotonic() + config.wait
        while time.monotonic() < deadline and stop.signal is None:
            time.sleep(DRAIN_INTERVAL)
            tracer.drain()
            if all(p.answer or p.send_error or p.local_drop for p in sent):
                break
