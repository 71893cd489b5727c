"""The correlator on recorded events, without root: each packet's fate, the flow's
typed counts, and their JSON form."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from pktfate.correlate.correlator import (
    Arrival,
    Correlator,
    DropSite,
    ErrorIn,
    merge_flows,
)
from pktfate.decode.events import PER_PACKET_FIELDS, PacketEvent, Shape
from pktfate.decode.recording import read_recording
from pktfate.model.kinds import Fate, Hook
from pktfate.model.protocols import IcmpCode, Proto
from pktfate.output.jsonl import flow_json

from .recorded import CLIENT, SERVER, Recorder

ROUTER = "10.0.2.1"


def _flows(rec: Recorder, ports=(80,)):
    correlator = Correlator({SERVER}, ports)
    for ev in rec.events:
        correlator.feed(ev)
    return correlator.finish()


def _answer_syn(rec: Recorder, seq: int, sport: int = 40000) -> None:
    rec.add(hook="tc-egress", src=SERVER, dst=CLIENT, sport=80, dport=sport, tcp_flags="SA",
            seq=5000, ack=seq + 1, ip_id=0)


def test_each_syn_gets_exactly_one_fate():
    rec = Recorder()
    rec.syn(1, sport=40001)
    _answer_syn(rec, 1000, sport=40001)
    rec.syn(1, sport=40002, drop={"reason": "NETFILTER_DROP", "location": "nf_hook_slow+0x9"})
    rec.syn(1, sport=40003, rst_sent={})
    rec.syn(1, sport=40004)  # nothing more: unanswered
    flows = merge_flows(_flows(rec), (80,))
    assert len(flows) == 1
    flow = flows[0]
    assert flow.syn_in == 4
    assert dict(+flow.syn_fates) == {"answered": 1, "dropped": 1, "reset": 1, "unanswered": 1}
    assert sum(flow.syn_fates.values()) == flow.syn_in
    assert flow.members == [1, 2, 3, 4]


def test_a_later_weaker_sighting_never_overrides_a_drop():
    rec = Recorder()
    rec.syn(1, drop={"reason": "TCP_CSUM", "location": "tcp_v4_rcv+0x1a"})
    rec.add(hook="tc-ingress", iface="br0", ip_id=100, seq=1000)  # the same, on the bridge
    (flow,) = _flows(rec)
    assert dict(+flow.fates) == {"dropped": 1}
    assert flow.drops == {"TCP_CSUM": 1}
    assert flow.drop_sites == {DropSite("TCP_CSUM", "tcp_v4_rcv"): 1}


def test_arrivals_are_typed_and_counted_once_per_packet():
    rec = Recorder()
    rec.syn(3)  # each seen at xdp and then tc-ingress
    (flow,) = merge_flows(_flows(rec), (80,))
    assert flow.arrived_on == {Arrival(Hook.XDP, "eth0"): 3}
    assert flow.packets_in == 3


def test_icmp_errors_sent_and_received_are_typed():
    rec = Recorder()
    rec.syn(1, icmp_error_sent={"icmp_type": 3, "icmp_code": 13})
    # An ICMP error from a router about this host's own UDP datagram to the client.
    rec.add(hook="tc-egress", src=SERVER, dst=CLIENT, proto="udp", sport=5353, dport=53,
            tcp_flags=None, seq=None, ack=None, ip_id=42)
    rec.add(hook="xdp", src=ROUTER, dst=SERVER, proto="icmp", tcp_flags=None, seq=None,
            ack=None, sport=None, dport=None, icmp_type=3, icmp_code=3, ttl=64, ip_id=43,
            quoted={"proto": "udp", "src": SERVER, "dst": CLIENT, "ttl": 63, "sport": 5353,
                    "dport": 53, "seq": None})
    flows = {(f.proto, f.local_port): f for f in _flows(rec, ports=(80, 5353))}
    assert flows[Proto.TCP, 80].icmp_errors_sent == {IcmpCode(3, 13): 1}
    assert dict(+flows[Proto.TCP, 80].fates) == {Fate.ICMP_ERROR: 1}
    assert flows[Proto.UDP, 5353].errors_in == {ErrorIn(3, 3, ROUTER, 64): 1}


def test_flow_json_writes_typed_counts_as_records():
    rec = Recorder()
    rec.syn(2, drop={"reason": "TCP_CSUM", "location": "tcp_v4_rcv+0x1a"})
    (flow,) = merge_flows(_flows(rec), (80,))
    out = json.loads(json.dumps(flow_json(flow)))
    assert out["arrived_on"] == [{"hook": "xdp", "iface": "eth0", "count": 2}]
    assert out["drop_sites"] == [{"reason": "TCP_CSUM", "function": "tcp_v4_rcv", "count": 2}]
    assert out["icmp_errors_sent"] == [] and out["errors_in"] == []
    assert out["drops"] == {"TCP_CSUM": 2}


def test_echo_requests_are_answered_by_their_replies():
    rec = Recorder()
    rec.ping(3)
    rec.add(hook="xdp", proto="icmp", tcp_flags=None, seq=None, ack=None, checksum=None,
            sport=7, dport=9, icmp_type=8, icmp_code=0, ip_id=600)  # never answered
    (flow,) = _flows(rec)
    assert flow.proto is Proto.ICMP
    assert flow.echo_requests_in == 4 and flow.echo_replies_out == 3
    assert dict(+flow.fates) == {"answered": 3, "unanswered": 1, "sent": 3}  # the replies


# ------------------------------------------------------- shapes (decode.events.Shape)

DATA = Path(__file__).resolve().parents[1] / "data"
_PER_PACKET = set(PER_PACKET_FIELDS)


def _shaped(events: list[PacketEvent]) -> list[tuple[PacketEvent, Shape | None]]:
    """Each event with a Shape shared by the events that agree on every field but
    the per-packet ones, as the decoder hands them over (none for ICMP errors)."""
    shapes: dict[tuple, Shape] = {}
    out = []
    for ev in events:
        if ev.quoted is not None:
            out.append((ev, None))
            continue
        key = tuple(v for k, v in ev._asdict().items() if k not in _PER_PACKET)
        shape = shapes.setdefault(key, Shape([], ev.family == 4, ev.proto is Proto.TCP, 0, False))
        out.append((ev, shape))
    return out


@pytest.mark.parametrize("recording", sorted(p.name for p in DATA.glob("watch-*.jsonl")))
def test_what_the_correlator_works_out_once_per_shape_changes_no_count(recording):
    # A shape's direction, flow and handler are remembered (Correlator._route); every
    # recorded watch must give the same flows, counted the same, with shapes as without.
    events: list[PacketEvent] = []
    start, _ = read_recording(io.BytesIO((DATA / recording).read_bytes()), "",
                              lambda _start, ev: events.append(ev))
    assert events
    plain = Correlator(set(start.local_addrs), start.ports)
    shaped = Correlator(set(start.local_addrs), start.ports)
    for ev in events:
        plain.feed(ev)
    for ev, shape in _shaped(events):
        shaped.feed(ev, shape)
    assert [flow_json(f) for f in shaped.finish()] == [flow_json(f) for f in plain.finish()]


@pytest.mark.parametrize("shaped", [False, True])
def test_a_packet_counts_on_the_flow_of_the_way_it_was_first_seen(shaped):
    # A RST event without an skb (a socket's own abort) goes out, whatever its
    # addresses say; the same packet seen again with an skb, of the same shape, is
    # counted on the flow the packet began on, not the one its shape points to.
    rec = Recorder()
    rec.syn(1, sport=40001)
    rst = dict(hook="rst-sent", src=CLIENT, dst=SERVER, sport=40001, dport=80,
               tcp_flags="R", ip_id=0)
    rec.add(**rst, skb=None)
    rec.add(**rst, skb="0x10")
    correlator = Correlator({SERVER}, (80,))
    for ev, shape in _shaped(rec.events):
        correlator.feed(ev, shape if shaped else None)
    flows = {(f.local, f.local_port, f.peer, f.peer_port): f for f in correlator.finish()}
    began_out = flows[(CLIENT, 40001, SERVER, 80)]
    assert (began_out.packets_out, began_out.rst_out, began_out.kernel_resets) == (1, 1, 2)
    syn = flows[(SERVER, 80, CLIENT, 40001)]
    assert (syn.packets_in, syn.syn_in, syn.kernel_resets) == (1, 1, 0)


def test_every_hook_of_a_packet_has_its_handler():
    # Handlers are found in a table keyed by Hook, not by method names: a hook
    # added to the kernel side without one would send its events nowhere.
    handlers = Correlator()._handlers
    assert set(handlers) == set(Hook) - {Hook.SOCK_STATE}  # a state change carries no packet
    assert all(callable(handler) for handler in handlers.values())
