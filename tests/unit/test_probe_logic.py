"""pktfate probe's pure logic and the client-side origin check, on recorded
answers: no root, no kernel."""

import ipaddress
import struct

import pytest

from pktfate.correlate.correlator import Correlator
from pktfate.decode.checksum import ones_sum, pseudo_header_sum
from pktfate.decode.events import Quoted, quoted_packet
from pktfate.diagnosis.diagnose import diagnose
from pktfate.diagnosis.evidence import Evidence
from pktfate.diagnosis.origin import answered_by, hop_of, initial_ttl, usual_hop
from pktfate.model.protocols import Proto
from pktfate.probe.plan import (
    FULL_TTL,
    AnswerKind,
    Blocked,
    Matcher,
    Probe,
    ProbeConfig,
    Track,
    answer_text,
    conclude,
    icmp_echo,
    ipv6_header,
    result,
    target_hop,
    tcp_syn,
    udp_datagram,
)

from .recorded import event

CLIENT, ROUTER, SERVER = "10.0.1.2", "10.0.1.1", "10.0.2.2"
ECHO_ID = 4242


@pytest.mark.parametrize(("ttl", "initial", "hop"), [(64, 64, 1), (63, 64, 2), (61, 64, 4),
                                              (128, 128, 1), (117, 128, 12), (255, 255, 1),
                                              (250, 255, 6), (30, 32, 3), (65, 128, 64)])
def test_initial_ttl_and_hop(ttl, initial, hop):
    assert initial_ttl(ttl) == initial and hop_of(ttl) == hop


def test_answered_by():
    assert answered_by(SERVER, 2, SERVER, 2) == "target"
    assert answered_by(SERVER, 1, SERVER, 2) == "path"  # forged in the server's name
    assert answered_by(ROUTER, 1, SERVER, 2) == "path"  # an ICMP error names its sender
    assert answered_by(SERVER, 2, SERVER, None) == "unknown"
    assert answered_by(None, None, SERVER, 2) == "unknown"
    assert usual_hop({63: 5, 64: 1}) == 2 and usual_hop({}) is None


def _valid(segment: bytes, proto: int) -> bool:
    total = ones_sum(segment) + pseudo_header_sum(CLIENT, SERVER, proto, len(segment))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def test_probe_packets_carry_valid_checksums():
    syn = tcp_syn(CLIENT, SERVER, 40001, 22, 12345)
    assert struct.unpack("!HHI", syn[:8]) == (40001, 22, 12345) and syn[13] == 0x02
    assert _valid(syn, 6)
    assert _valid(udp_datagram(CLIENT, SERVER, 40002, 53), 17)
    echo = icmp_echo(ECHO_ID, 7)
    assert ones_sum(echo) == 0xFFFF and struct.unpack("!HH", echo[4:8]) == (ECHO_ID, 7)


def _quote(proto: int, sport: int, dport: int, seq: int = 0) -> bytes:
    inner_ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 60, 1, 0, 1, proto, 0,
                           ipaddress.IPv4Address(CLIENT).packed,
                           ipaddress.IPv4Address(SERVER).packed)
    return b"\x0b\x00\x00\x00\x00\x00\x00\x00" + inner_ip + struct.pack("!HHI", sport, dport,
                                                                        seq)


def test_quoted_packet_of_an_icmp_error():
    q = quoted_packet(Proto.ICMP, 11, _quote(6, 40001, 22, 99))
    assert q == Quoted(Proto.TCP, CLIENT, SERVER, ttl=1, sport=40001, dport=22, seq=99)
    assert quoted_packet(Proto.ICMP, 0, _quote(6, 1, 2)) is None  # an echo reply quotes nothing
    assert quoted_packet(Proto.ICMP, 3, b"\x03\x03\x00\x00") is None  # too short


def _ev(**fields):
    """An arrival at the client, from the server unless told otherwise."""
    return event(**dict({"hook": "tc-ingress", "src": SERVER, "dst": CLIENT}, **fields))


def _time_exceeded(proto_number: int, sport: int, dport: int):
    return _ev(src=ROUTER, proto="icmp", ttl=64, icmp_type=11, icmp_code=0, tcp_flags=None,
               quoted=quoted_packet(Proto.ICMP, 11, _quote(proto_number, sport, dport)))


def _track(matcher: Matcher, proto: str, port, answers: dict) -> Track:
    """A track whose probes (TTL -> answering event or None) went through the matcher."""
    track = Track(proto, port)
    for n, (ttl, ev) in enumerate(answers.items()):
        probe = Probe(proto, port, ttl, ident=40000 + n if proto != "icmp" else n, ip_id=n)
        track.probes.append(probe)
        matcher.add(probe)
        if ev is not None:
            matcher.feed(ev(probe.ident))
    return track


def _forged_lab() -> tuple[list[Track], Matcher]:
    m = Matcher(SERVER, {CLIENT}, ECHO_ID)
    rst = _track(m, "tcp", 22, {
        1: lambda i: _time_exceeded(6, i, 22),
        2: lambda i: _ev(proto="tcp", sport=22, dport=i, tcp_flags="RA", ttl=64),
        FULL_TTL: lambda i: _ev(proto="tcp", sport=22, dport=i, tcp_flags="RA", ttl=64)})
    web = _track(m, "tcp", 80, {
        1: lambda i: _time_exceeded(6, i, 80),
        2: lambda i: _ev(proto="tcp", sport=80, dport=i, tcp_flags="SA", ttl=63),
        FULL_TTL: lambda i: _ev(proto="tcp", sport=80, dport=i, tcp_flags="SA", ttl=63)})
    dns = _track(m, "udp", 53, {1: lambda i: _time_exceeded(17, i, 53), 2: None, 3: None,
                                FULL_TTL: None})
    icmp = _track(m, "icmp", None, {
        FULL_TTL: lambda i: _ev(proto="icmp", icmp_type=0, icmp_code=0, sport=ECHO_ID,
                                dport=i, tcp_flags=None, ttl=63)})
    return [rst, web, dns, icmp], m


def test_results_trace_the_forged_rst_to_the_router():
    tracks, _ = _forged_lab()
    hops, what = target_hop(tracks, SERVER)
    assert (hops, what) == (2, "echo replies")
    results = [result(t, SERVER, hops, []) for t in tracks]
    conclude(results, SERVER, what)
    rst, web, dns, icmp = results
    assert rst.answer == "rst" and rst.answered_by == "path"
    assert (rst.answer_ttl, rst.answer_initial_ttl, rst.answer_hops) == (64, 64, 1)
    assert rst.origin == ROUTER and rst.last_hop == 2
    assert "the device at hop 1 (10.0.1.1), closer than 10.0.2.2, sent it" in rst.conclusion
    assert web.answered_by == "target" and web.conclusion.endswith("open")
    assert dns.answer == "none" and dns.last_hop == 1 and dns.last_hop_from == ROUTER
    assert "TCP :22, TCP :80 get through" not in dns.conclusion
    assert "TCP :80, ICMP get through to 10.0.2.2" in dns.conclusion
    assert icmp.answer == "echo-reply" and icmp.answered_by == "target"


def test_without_the_targets_own_distance_the_origin_is_unknown():
    tracks, _ = _forged_lab()
    rst = result(tracks[0], SERVER, None, [])
    assert rst.answered_by == "unknown" and rst.target_hops is None


def test_answers_that_are_not_ours_are_ignored():
    tracks, m = _forged_lab()
    before = [p.answer for t in tracks for p in t.probes]
    m.feed(_ev(proto="tcp", sport=22, dport=1, tcp_flags="RA", ttl=64))  # unknown port
    m.feed(_ev(proto="icmp", icmp_type=0, icmp_code=0, sport=1, dport=0, tcp_flags=None))
    m.feed(_ev(src="10.9.9.9", proto="tcp", sport=22, dport=40000, tcp_flags="RA"))
    assert [p.answer for t in tracks for p in t.probes] == before


def test_rounds_stop_at_the_end_of_the_path_and_retry_silent_hops():
    track = Track("udp", 53)
    assert track.plan_round(30, set()) == [1, 2, FULL_TTL]
    track.probes = [Probe("udp", 53, ttl, ttl, 0) for ttl in (1, 2, FULL_TTL)]
    assert track.plan_round(30, set()) == [3, 4, 5, 6]  # two silent hops: go on
    track.probes += [Probe("udp", 53, ttl, ttl, 0) for ttl in (3, 4, 5, 6)]
    # Six silent hops: the series ends; the full probe and hop 1, which a router
    # answered for another port (rate limits), are tried again, three times at most.
    assert track.plan_round(30, {1}) == [1, FULL_TTL]
    track.probes += [Probe("udp", 53, ttl, ttl, 0) for ttl in (1, FULL_TTL)]
    assert track.plan_round(30, {1}) == [1, FULL_TTL]
    track.probes += [Probe("udp", 53, ttl, ttl, 0) for ttl in (1, FULL_TTL)]
    assert track.plan_round(30, {1}) == []


def test_probes_blocked_here_are_not_sent_again():
    track = Track("udp", 53)
    track.probes = [Probe("udp", 53, ttl, ttl, 0, send_error="Operation not permitted")
                    for ttl in (1, 2, FULL_TTL)]
    assert track.plan_round(30, set()) == []
    rule = "iptables -t filter -A OUTPUT -p udp -m udp --dport 53 -j DROP"
    r = result(track, SERVER, 2, [{"rule": rule}])
    conclude([r], SERVER, "echo replies")
    assert r.blocked_here == Blocked("Operation not permitted", None, (rule,), ())
    assert r.conclusion.startswith("UDP :53 probes never leave this host")


def test_ports_with_and_without_protocol():
    config = ProbeConfig(SERVER, ((22, "tcp"), (53, None)), ("tcp", "udp", "icmp"))
    assert config.tracks() == [("tcp", 22), ("tcp", 53), ("udp", 53), ("icmp", None)]
    assert ProbeConfig(SERVER, ((53, "udp"),), ("tcp",)).tracks() == [("udp", 53)]


# ---------------------------------------------------------------- watch on a client


def _client_watch(rst_ttl: int, echo_ttl: int = 63):
    """What `pktfate watch --port 22` on the client records: pings answered, one SYN
    out, one RST in."""
    out = dict(src=CLIENT, dst=SERVER, hook="tc-egress", ttl=64)
    events = []
    for i in range(3):
        icmp = dict(proto="icmp", tcp_flags=None, seq=None, ack=None, checksum=None,
                    sport=7, dport=i)
        events.append(event(**out, icmp_type=8, icmp_code=0, ip_id=10 + i, **icmp))
        events.append(_ev(ttl=echo_ttl, icmp_type=0, icmp_code=0, ip_id=20 + i, **icmp))
    events.append(event(**out, sport=50000, dport=22, seq=1000))
    events.append(_ev(sport=22, dport=50000, tcp_flags="RA", seq=0, ack=1001, ttl=rst_ttl,
                      ip_id=0))
    correlator = Correlator({CLIENT}, (22,))
    for ev in events:
        correlator.feed(ev)
    return diagnose(Evidence(correlator.finish(), {}, (22,)))


def test_client_watch_names_a_forged_rst():
    top = _client_watch(rst_ttl=64)[0]
    assert top.cause == "forged-reset"
    assert "not sent by 10.0.2.2" in top.summary
    assert "TTL 64 (initial 64, hop 1)" in top.evidence[0]
    assert "come from hop 2" in top.evidence[0]
    assert "pktfate probe 10.0.2.2 --port 22/tcp" in top.fix[0]


def test_client_watch_trusts_a_rst_from_the_servers_own_distance():
    assert "forged-reset" not in [f.cause for f in _client_watch(rst_ttl=63)]


def test_icmp_error_from_a_router_about_the_flow():
    events = [event(src=CLIENT, dst=SERVER, hook="tc-egress", ttl=64, sport=50000,
                      dport=22, seq=1000)]
    quote = bytearray(_quote(6, 50000, 22, 1000))
    quote[0], quote[1] = 3, 13  # administratively prohibited
    events.append(_ev(src=ROUTER, proto="icmp", ttl=64, icmp_type=3, icmp_code=13,
                      tcp_flags=None, sport=None, dport=None,
                      quoted=quoted_packet(Proto.ICMP, 3, bytes(quote))))
    correlator = Correlator({CLIENT}, (22,))
    for ev in events:
        correlator.feed(ev)
    top = diagnose(Evidence(correlator.finish(), {}, (22,)))[0]
    assert top.cause == "refused-on-path"
    assert "10.0.1.1, a device on the path, answers with ICMP administratively prohibited" in \
        top.summary


# ---------------------------------------------------------------- rules named for their match

# The OUTPUT chain of the case: only TCP 443 may leave; ICMP and UDP are dropped.
OUTPUT_443 = [f"iptables -t filter -A OUTPUT {m} -j {v}" for m, v in (
    ("-p tcp -m tcp --dport 443", "ACCEPT"), ("-p icmp", "DROP"), ("-p udp", "DROP"))]


def _blocked(proto: str, port) -> Track:
    track = Track(proto, port)
    track.probes = [Probe(proto, port, ttl, 40000 + ttl if port else ttl, 0,
                          send_error="Operation not permitted") for ttl in (1, 2, FULL_TTL)]
    return track


def test_each_blocked_protocol_names_only_the_rule_that_matches_it():
    moved = [{"rule": OUTPUT_443[1], "packets": 6}, {"rule": OUTPUT_443[2], "packets": 3}]
    udp, icmp = (result(_blocked(p, port), SERVER, None, moved, CLIENT, "eth0")
                 for p, port in (("udp", 443), ("icmp", None)))
    conclude([udp, icmp], SERVER, "")
    assert udp.blocked_here.rules == (OUTPUT_443[2],)
    assert icmp.blocked_here.rules == (OUTPUT_443[1],)
    assert udp.conclusion.endswith("the rule: " + OUTPUT_443[2])
    assert "-p icmp" not in udp.conclusion and "-p udp" not in icmp.conclusion


def test_a_rule_whose_match_cannot_be_read_is_named_as_such():
    unclear = "iptables -t filter -A OUTPUT -m set --match-set blocked dst -j DROP"
    udp = result(_blocked("udp", 53), SERVER, None, [{"rule": unclear}], CLIENT, "eth0")
    conclude([udp], SERVER, "")
    assert udp.blocked_here.rules == () and udp.blocked_here.rules_unclear == (unclear,)
    assert "cannot tell from its match whether it is this one: " + unclear in udp.conclusion


@pytest.mark.parametrize(("rule", "packet", "expected"), [
    # iptables words: negation, ranges, multiport, addresses, interfaces, families
    ("iptables -t filter -A INPUT -p tcp -m tcp ! --dport 22 -j DROP", {"dport": 80}, True),
    ("iptables -t filter -A INPUT -p tcp -m tcp ! --dport 22 -j DROP", {"dport": 22}, False),
    ("iptables -t filter -A INPUT -p tcp -m multiport --dports 80,8000:8100 -j DROP",
     {"dport": 8080}, True),
    ("iptables -t filter -A INPUT -s 10.0.1.0/24 -p tcp -j DROP", {"src": "10.0.9.2"}, False),
    ("iptables -t filter -A INPUT -i eth+ -p tcp -j DROP", {"iif": "eth0"}, True),
    ("iptables -t filter -A INPUT -i eth1 -p tcp -j DROP", {}, None),  # interface unknown
    ("ip6tables -t filter -A INPUT -p tcp -j DROP", {}, False),  # an IPv4 packet
    ("iptables -t filter -A OUTPUT -p tcp -j DROP", {}, False),  # OUTPUT: not arrivals
    ("iptables -t filter -A my-chain -p tcp -j DROP", {}, True),  # a chain of either way
    ("iptables -t filter -A INPUT -m conntrack --ctstate INVALID -j DROP", {}, True),
    # nft words, as `nft list ruleset` prints them
    ("nft table inet fw chain input: tcp dport { 22, 80 } drop", {"dport": 80}, True),
    ("nft table inet fw chain input: tcp dport != 80 drop", {"dport": 80}, False),
    ("nft table inet fw chain input: udp dport 53 drop", {}, False),
    ("nft table inet fw chain input: tcp dport @blocked drop", {}, None),
    ("nft table ip fw chain input: ip saddr 10.0.1.0/24 meta l4proto tcp drop", {}, True),
    ("nft table ip6 fw chain input: tcp dport 80 drop", {}, False),
    ("nft table inet fw chain input: iifname \"eth0\" tcp dport 80-90 drop", {"iif": "eth0"},
     True),
])
def test_whether_a_rule_covers_a_packet(rule, packet, expected):
    from pktfate.host.firewall import covers

    arriving = {"family": 4, "direction": "in", "proto": "tcp", "src": CLIENT, "dst": SERVER,
                "sport": 40000, "dport": 80}
    assert covers(rule, {**arriving, **packet}) is expected


# ---------------------------------------------------------------- IPv6


CLIENT6, ROUTER6, SERVER6 = "fd00:1::2", "fd00:1::1", "fd00:2::2"


def _ev6(**fields):
    return _ev(**dict({"family": 6, "src": SERVER6, "dst": CLIENT6}, **fields))


def _time_exceeded6(inner_proto: int, sport: int, dport: int):
    inner = ipv6_header(CLIENT6, SERVER6, inner_proto, 1, 0, 20) + \
        struct.pack("!HHI", sport, dport, 0)
    return _ev6(src=ROUTER6, proto="icmpv6", ttl=64, icmp_type=3, icmp_code=0, tcp_flags=None,
                quoted=quoted_packet(Proto.ICMPV6, 3, b"\x03\x00\x00\x00\x00\x00\x00\x00" + inner))


def test_ipv6_probes_carry_valid_checksums_and_headers():
    header = ipv6_header(CLIENT6, SERVER6, 58, 3, 0x12345, 22)
    assert len(header) == 40 and header[0] >> 4 == 6 and header[6:8] == b"\x3a\x03"
    echo = icmp_echo(ECHO_ID, 5, CLIENT6, SERVER6)
    assert echo[0] == 128  # ICMPv6 echo request
    total = ones_sum(echo) + pseudo_header_sum(CLIENT6, SERVER6, 58, len(echo))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    assert total == 0xFFFF


def test_ipv6_answers_pair_with_their_probes_and_tell_a_forged_rst():
    m = Matcher(SERVER6, {CLIENT6}, ECHO_ID)
    rst = _track(m, "tcp", 22, {
        1: lambda i: _time_exceeded6(6, i, 22),
        FULL_TTL: lambda i: _ev6(proto="tcp", sport=22, dport=i, tcp_flags="RA", ttl=64)})
    closed = _track(m, "udp", 9, {
        FULL_TTL: lambda i: _ev6(proto="icmpv6", icmp_type=1, icmp_code=4, ttl=63,
                                 tcp_flags=None, src=SERVER6,
                                 quoted=quoted_packet(Proto.ICMPV6, 1, b"\x01\x04" + b"\x00" * 6 +
                                                      ipv6_header(CLIENT6, SERVER6, 17, 60, 0,
                                                                  8) + struct.pack("!HHI", i, 9,
                                                                                   0)))})
    icmp = _track(m, "icmp", None, {
        FULL_TTL: lambda i: _ev6(proto="icmpv6", icmp_type=129, icmp_code=0, sport=ECHO_ID,
                                 dport=i, tcp_flags=None, ttl=63)})
    tracks = [rst, closed, icmp]
    hops, what = target_hop(tracks, SERVER6)
    assert (hops, what) == (2, "echo replies")
    results = [result(t, SERVER6, hops, []) for t in tracks]
    conclude(results, SERVER6, what)
    forged, port, echo = results
    assert forged.answered_by == "path" and forged.origin == ROUTER6
    assert "arrived with hop limit 64 (initial 64, hop 1)" in forged.conclusion
    assert port.answer == "icmp-unreachable" and port.answered_by == "target"
    assert port.icmp_type == 1 and port.icmp_code == 4
    assert echo.answer == "echo-reply" and echo.answered_by == "target"
    assert port.conclusion == ("UDP :9 reaches fd00:2::2 (hop 2): closed (the host itself "
                                  "answers unreachable)")
    unreachable = AnswerKind.ICMP_UNREACHABLE
    assert answer_text(unreachable, 1, 4, v6=True) == "ICMPv6 port unreachable"
    assert answer_text(unreachable, 1, 1, v6=True) == "ICMPv6 administratively prohibited"
