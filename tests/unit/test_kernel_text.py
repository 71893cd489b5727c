"""Parsing what the kernel says about itself: tracepoint formats, SNMP counters."""

from pktfate.host.counters import delta, parse_snmp
from pktfate.kernel.discovery import parse_format_fields, parse_print_symbolic, strip_enum_prefix

FORMAT = """name: kfree_skb
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:__u8 saddr[28];\toffset:16;\tsize:28;\tsigned:0;
\tfield:enum skb_drop_reason reason;\toffset:36;\tsize:4;\tsigned:0;

print fmt: "reason: %s", __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 10, "TCP_CSUM" })
"""


def test_format_fields():
    assert parse_format_fields(FORMAT) == {"skbaddr", "saddr", "reason"}


def test_print_symbolic():
    assert parse_print_symbolic(FORMAT) == {2: "NOT_SPECIFIED", 10: "TCP_CSUM"}


def test_strip_prefix():
    assert strip_enum_prefix({3: "SKB_DROP_REASON_TCP_CSUM", 0: "SKB_NOT_DROPPED_YET"},
                             "SKB_DROP_REASON_") == {3: "TCP_CSUM", 0: "SKB_NOT_DROPPED_YET"}


def test_snmp_pairs_and_delta():
    before = parse_snmp("Tcp: RtoMin InCsumErrors\nTcp: 200 4\nUdp: NoPorts\nUdp: 1\n")
    after = parse_snmp("Tcp: RtoMin InCsumErrors\nTcp: 200 10\nUdp: NoPorts\nUdp: 1\n")
    assert before["TcpInCsumErrors"] == 4
    assert delta(before, after) == {"TcpInCsumErrors": 6}
