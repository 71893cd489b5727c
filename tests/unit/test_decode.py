"""Decoding from raw bytes, as the ring buffer hands them over: no root, no kernel."""

from __future__ import annotations

import ctypes
import io
import ipaddress
import json
import random
import struct

import pytest

from pktfate.decode.events import Decoder, PacketEvent, WatchStats
from pktfate.decode.raw import CsumVerdict, Hook, RawEvent, event_record
from pktfate.model.host import HostContext
from pktfate.model.kinds import CSUM_NAMES, HOOK_NAMES, Location, StateChange
from pktfate.model.protocols import PROTO_NAMES, Proto, TcpFlags, TcpState
from pktfate.output.jsonl import JsonOutput, _seconds_text, packet_line

from ..kernel_side import decode_one, ring_record
from .recorded import event_json


def _raw(**fields) -> bytes:
    """The bytes of one struct pf_event, as BPF writes them."""
    ev = RawEvent()
    for name, value in fields.items():
        if name in ("saddr", "daddr"):
            packed = ipaddress.ip_address(value).packed.ljust(16, b"\0")
            value = (ctypes.c_uint32 * 4)(*struct.unpack("<4I", packed))
        setattr(ev, name, value)
    return bytes(ev)


def _decoder() -> Decoder:
    return Decoder(lambda code: {2: "NOT_SPECIFIED", 69: "TCP_CSUM"}.get(code, f"R{code}"),
                   lambda addr: Location("func", addr), lambda index: f"eth{index}",
                   boot_offset=1000.0, local_netns=77)


def test_a_dropped_syn_from_raw_bytes():
    data = _raw(ts_ns=2_500_000_000, skb=0xFFFF888001234000, location=0x4BC,
                saddr="10.0.1.2", daddr="10.0.2.2", netns=0, ifindex=2, reason=69,
                seq=1234, pkt_len=60, sport=45854, dport=80, ip_id=7, hook=Hook.KFREE_SKB,
                family=4, proto=6, tcp_flags=0x02, ttl=63)
    ev = decode_one(_decoder(), event_record(data))
    assert (ev.hook, ev.proto, ev.src, ev.dst, ev.sport, ev.dport) == \
        (Hook.KFREE_SKB, Proto.TCP, "10.0.1.2", "10.0.2.2", 45854, 80)
    assert (ev.reason, ev.location, ev.tcp_flags, ev.seq) == \
        ("TCP_CSUM", Location("func", 0x4BC), TcpFlags.SYN, 1234)
    assert ev.ts == 1002.5 and ev.netns == 77 and ev.iface == "eth2"
    assert ev.skb == 0xFFFF888001234000 and ev.checksum is None  # not an arrival
    line = event_json(ev)  # and in the JSON, as the README names them
    assert (line["hook"], line["proto"], line["location"], line["tcp_flags"], line["skb"]) == \
        ("drop", "tcp", "func+0x4bc", "S", "0xffff888001234000")


def test_timestamps_are_to_the_microsecond_whatever_the_boot_offset():
    # The JSON writes ts as Python's shortest repr: a float off its 6-decimal value
    # would print 17 digits. Both decoding paths (the first of a shape and the
    # ones after it) must agree with the sum rounded down to the microsecond.
    for offset in (1763868427.123456789, 0.0000004, 1700000000.9999996):
        decoder = Decoder(lambda _code: None, Location, str, boot_offset=offset)
        micro = round(offset * 1e6)
        for n, ts_ns in enumerate((0, 999, 1_000, 2_500_000_123, 987_654_321_987_654)):
            data = _raw(ts_ns=ts_ns, saddr="10.0.1.2", daddr="10.0.2.2", family=4, proto=17,
                        hook=Hook.KFREE_SKB, ip_id=n)
            for _ in range(2):  # first of its shape, then known
                ts = decode_one(decoder, event_record(data)).ts
                assert ts == (ts_ns // 1000 + micro) / 1e6
                assert round(ts, 6) == ts, repr(ts)


def test_an_arrival_carries_the_kernels_checksum_verdict_by_name():
    # The kernel judges an arrival's checksum (bpf/parse.h); the event names it.
    names = {CsumVerdict.NONE: None, CsumVerdict.GOOD: "good", CsumVerdict.BAD: "bad",
             CsumVerdict.PSEUDO: "pseudo-header-only", CsumVerdict.UNCHECKED: "unchecked"}
    assert set(names) == set(CsumVerdict)
    names[len(CsumVerdict) + 2] = f"verdict{len(CsumVerdict) + 2}"  # a newer kernel side's
    for verdict, name in names.items():
        decoder = _decoder()
        for ip_id in (1, 2):  # the first of its shape, then one of a known shape
            data = _raw(saddr="10.0.1.2", daddr="10.0.2.2", hook=Hook.XDP, family=4, proto=6,
                        l4_csum=0x1234, l4_len=40, snap_len=20, ifindex=3, ttl=63,
                        ip_id=ip_id, csum_verdict=verdict)
            ev = decode_one(decoder, event_record(data))
            line = event_json(ev)
            assert (line["hook"], line["checksum"], line["csum_field"]) == ("xdp", name, 0x1234)


def test_an_ipv6_echo_request():
    data = _raw(saddr="fd00:1::2", daddr="fd00:2::2", hook=Hook.TC_INGRESS, family=6,
                proto=58, icmp_type=128, sport=7, dport=3, ttl=63)
    ev = decode_one(_decoder(), event_record(data))
    assert (ev.proto, ev.src, ev.icmp_type, ev.sport, ev.dport, ev.ip_id) == \
        (Proto.ICMPV6, "fd00:1::2", 128, 7, 3, None)


def test_a_decoded_event_is_the_named_tuple_it_claims_to_be():
    # The decoder builds the tuple from its shape's values directly: every field, in
    # declaration order (the JSON lines' order), equal to one built by the class,
    # and as immutable.
    decoder = _decoder()
    data = _raw(saddr="10.0.1.2", daddr="10.0.2.2", hook=Hook.TC_INGRESS, family=4, proto=17,
                sport=5353, dport=53, ip_id=9, ttl=63, pkt_len=40, ifindex=2)
    first, again = (decode_one(decoder, event_record(data)) for _ in range(2))  # again: by shape
    for ev in (first, again):
        assert type(ev) is PacketEvent and len(ev) == len(PacketEvent._fields)
        assert ev == PacketEvent(**ev._asdict())
        assert list(event_json(ev))[1:] == list(PacketEvent._fields)
        with pytest.raises(AttributeError):
            ev.hook = "xdp"  # type: ignore[misc]


def _named(ev: PacketEvent) -> dict:
    """The event as the README's contract names its values, told here on its own
    (not by the output's code)."""
    out = {"kind": "packet", **ev._asdict()}
    out["hook"] = HOOK_NAMES[ev.hook]
    out["proto"] = PROTO_NAMES[ev.proto]
    if ev.tcp_flags is not None:
        out["tcp_flags"] = "".join(letter for bit, letter in
                                   ((2, "S"), (1, "F"), (4, "R"), (8, "P"), (16, "A"), (32, "U"))
                                   if ev.tcp_flags & bit) or "."
    if ev.location is not None:
        out["location"] = f"{ev.location.function}+{ev.location.offset:#x}"
    if ev.state is not None:
        out["state"] = f"{ev.state.old.name}>{ev.state.new.name}"
    if ev.checksum is not None:
        out["checksum"] = CSUM_NAMES[ev.checksum]
    if ev.skb is not None:
        out["skb"] = hex(ev.skb)
    if ev.quoted is not None:
        out["quoted"] = {**ev.quoted._asdict(), "proto": PROTO_NAMES[ev.quoted.proto]}
    return out


def _json_line(ev: PacketEvent) -> str:
    """What a packet line must be: json.dumps of the event's named values, with its
    time written to the microsecond, six decimals (the same number)."""
    text = json.dumps(_named(ev))
    if isinstance(ev.ts, float):
        text = text.replace(f'"ts": {json.dumps(ev.ts)},', f'"ts": {ev.ts:.6f},', 1)
    return text + "\n"


def test_a_time_is_written_to_the_microsecond_as_the_same_number():
    # Packet lines write the time from its whole microseconds as two integers
    # (jsonl._seconds_text), not as the float's shortest repr: always six decimals,
    # and the number a reader parses is the float the event holds.
    rng = random.Random(7)
    micros = [rng.randrange(978_307_200 * 10**6, 4_102_444_800 * 10**6) for _ in range(20_000)]
    micros += [1_796_511_641_000_000, 1_796_511_641_999_999, 1_796_511_641_748_770]
    for us in micros:
        ts = us / 1e6
        text = _seconds_text(ts)
        assert text == f"{us // 10**6}.{us % 10**6:06d}" and float(text) == ts, us


def test_the_packet_line_is_what_json_dumps_writes():
    decoder = _decoder()
    quoted = bytes([0x45, 0, 0, 40, 0, 1, 0, 0, 1, 6, 0, 0, 10, 0, 1, 2, 10, 0, 2, 2])
    snap = (ctypes.c_uint8 * 64)(*(bytes(8) + quoted + struct.pack("!HHI", 4000, 80, 7)))
    records = [
        _raw(saddr="10.0.1.2", daddr="10.0.2.2", hook=Hook.KFREE_SKB, family=4, proto=6,
             reason=69, location=0x10, skb=0xFFFF888000001000, tcp_flags=0x12, ts_ns=123456789),
        _raw(saddr="fd00:1::2", daddr="fd00:2::2", hook=Hook.XDP, family=6, proto=17,
             ifindex=4, sport=5, dport=53, snap_len=8, l4_len=8),
        _raw(saddr="10.0.1.1", daddr="10.0.1.2", hook=Hook.TC_INGRESS, family=4, proto=1,
             icmp_type=11, snap_len=36, snap=snap, tracked=1),
    ]
    for data in records:
        ev = decode_one(decoder, event_record(data))
        assert packet_line(ev) == _json_line(ev)
    odd = ev._replace(iface='we"ird\\é',
                      state=StateChange(TcpState.SYN_SENT, TcpState.ESTABLISHED))
    assert packet_line(odd) == _json_line(odd)


def _flood_records() -> list[bytes]:
    """One flow's packets at three hooks, with what changes from packet to packet
    changing: time, length, TTL, id, sequence, skb (none at XDP), checksum field
    and the kernel's verdict on it (good, bad and offloaded checksums in one
    shape)."""
    verdicts = (CsumVerdict.PSEUDO, CsumVerdict.BAD, CsumVerdict.GOOD)
    records = []
    for n in range(12):
        segment = bytearray(20)
        segment[12] = 5 << 4
        segment[4:8] = n.to_bytes(4, "big")  # the sequence number
        snap = (ctypes.c_uint8 * 64)(*segment)
        common = dict(saddr="10.0.1.2", daddr="10.0.2.2", family=4, proto=6, sport=4000,
                      dport=80, tcp_flags=0x02, ts_ns=1_000_000 * n + 7, pkt_len=60 + n,
                      ttl=63 - n % 2, ip_id=n, seq=n * 1000, ack_seq=n)
        arrival = dict(ifindex=2, l4_len=20, snap_len=20, snap=snap, l4_csum=0x1000 + n,
                       csum_verdict=verdicts[n % 3], **common)
        records.append(_raw(hook=Hook.XDP, **arrival))
        records.append(_raw(hook=Hook.TC_INGRESS, skb=0xFFFF888000001000 + 256 * n, **arrival))
        records.append(_raw(hook=Hook.KFREE_SKB, reason=69, location=0x10,
                            skb=0xFFFF888000001000 + 256 * n, **common))
    return records


def test_events_of_a_known_shape_decode_as_the_first_of_it_did():
    # After the first record of a shape, decode() takes the shared fields from it
    # and fills in only what changes: each event must equal a full decoding, with
    # its fields in declaration order.
    decoder, reference = _decoder(), _decoder()
    checksums = set()
    for data in _flood_records():
        record = event_record(data)
        ev, full = decode_one(decoder, record), reference._decode_all(record)
        assert ev == full and ev._asdict() == full._asdict()
        checksums.add(ev.checksum)
    assert len(decoder._shapes) == 3
    assert checksums == {None, CsumVerdict.GOOD, CsumVerdict.BAD, CsumVerdict.PSEUDO}


def test_a_record_differing_in_any_one_field_decodes_as_itself():
    # The shape is keyed by the shared span of the record (netns to snap): a field
    # the event's shared fields follow from, left outside it, would hand a record
    # the fields of another shape. Each field in turn changed from a known shape.
    base = dict(saddr="10.0.1.2", daddr="10.0.2.2", family=4, proto=6, sport=4000, dport=80,
                tcp_flags=0x02, hook=Hook.TC_INGRESS, ifindex=2, netns=9, pkt_len=60, ttl=63,
                ip_id=1, seq=1000, ack_seq=1, skb=0xFFFF888000001000, l4_len=20, snap_len=20,
                l4_csum=0x1234, ts_ns=10**9, reason=2, location=0x10)
    changed = dict(saddr="10.0.1.3", daddr="10.0.2.3", family=6, proto=17, sport=4001,
                   dport=81, tcp_flags=0x12, hook=Hook.KFREE_SKB, ifindex=3, netns=10,
                   pkt_len=61, ttl=62, ip_id=2, seq=1001, ack_seq=2, skb=0xFFFF888000002000,
                   l4_len=21, snap_len=8, l4_csum=0x4321, ts_ns=2 * 10**9, reason=69,
                   location=0x20, icmp_type=3, icmp_code=1, state_old=1, state_new=2,
                   watched_port=1, tracked=1, csum_verdict=CsumVerdict.BAD)
    names = {name for name, _ in RawEvent._fields_ if not name.startswith("_")} - {"snap"}
    assert set(changed) == names
    for name, value in changed.items():
        decoder, reference = _decoder(), _decoder()
        decode_one(decoder, event_record(_raw(**base)))
        record = event_record(_raw(**{**base, name: value}))
        assert decode_one(decoder, record) == reference._decode_all(record), name


def test_lines_of_a_known_shape_are_what_json_dumps_writes():
    decoder = _decoder()
    events = [decode_one(decoder, event_record(data)) for data in _flood_records()]
    # Per-packet fields null in one event and not in another of the same flow and hook.
    events += [events[1]._replace(skb=None, checksum=None, csum_field=None),
               events[1]._replace(ts=5, ip_id=None)]  # an int time: made whole
    for ev in events:
        assert packet_line(ev) == _json_line(ev)


def test_lines_written_by_shape_are_what_json_dumps_writes():
    # JsonOutput keeps one template per decoder shape, and per whether the event has
    # an skb: a shape's events with and without one, in either order.
    decoder, stream = _decoder(), io.StringIO()
    out = JsonOutput(stream)
    records = _flood_records()
    # The tc-ingress record of the first packet again, without its skb: same shape.
    without_skb = bytearray(records[1])
    without_skb[RawEvent.skb.offset:RawEvent.skb.offset + 8] = bytes(8)
    records.insert(3, bytes(without_skb))
    batch = decoder.decode_batch([ring_record(data) for data in records])
    assert all(shape is not None for _ev, shape in batch)
    out.events(batch[:5])
    out.events(batch[5:])
    assert stream.getvalue() == "".join(_json_line(ev) for ev, _ in batch)
    assert len(out._with_skb) == 2 and len(out._without_skb) == 2


def test_an_arrival_the_kernel_judged_no_checksum_of_is_written_whole():
    # In a shape whose first arrival got a checksum verdict, one without a verdict
    # (the kernel said none) has null where the shape's template has a string: its
    # line is made whole, right, and the lines after it still use the template.
    decoder, stream = _decoder(), io.StringIO()
    arrivals = [data for data in _flood_records()
                if event_record(data).hook == Hook.TC_INGRESS][:3]
    unjudged = bytearray(arrivals[1])
    unjudged[RawEvent.csum_verdict.offset] = CsumVerdict.NONE
    batch = decoder.decode_batch([ring_record(data) for data in
                                  (arrivals[0], bytes(unjudged), arrivals[2])])
    assert len({shape for _ev, shape in batch}) == 1
    assert [ev.checksum for ev, _ in batch] == [CsumVerdict.PSEUDO, None, CsumVerdict.GOOD]
    JsonOutput(stream).events(batch)
    assert stream.getvalue() == "".join(_json_line(ev) for ev, _ in batch)


def test_packet_lines_written_as_bytes_keep_their_place_among_the_text_lines():
    # Packet lines go to the byte stream under stdout's text stream; the start line
    # before them and the closing lines after them are text. Each in its place.
    decoder, data = _decoder(), io.BytesIO()
    stream = io.TextIOWrapper(data, encoding="utf-8")
    out = JsonOutput(stream)
    out.start({"version": "x", "ports": [80]})
    expected = [json.dumps({"kind": "start", "version": "x", "ports": [80]})]
    batch = decoder.decode_batch([ring_record(record) for record in _flood_records()])
    out.events(batch)
    expected += [_json_line(ev).rstrip("\n") for ev, _shape in batch]
    out.flush()
    out.finish([], [], WatchStats(), {}, HostContext())
    stream.flush()
    lines = data.getvalue().decode().splitlines()
    assert lines[:len(expected)] == expected
    assert [json.loads(line)["kind"] for line in lines[len(expected):]] == \
        ["stats", "counters", "context", "diagnosis"]
