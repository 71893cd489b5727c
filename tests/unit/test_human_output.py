"""The terminal report from recorded evidence, without root: what it says, in what
order, and that no line reaches 100 columns."""

from __future__ import annotations

import io

from pktfate.correlate.correlator import Correlator, merge_flows
from pktfate.decode.events import WatchStats
from pktfate.diagnosis.diagnose import diagnose
from pktfate.diagnosis.evidence import Evidence
from pktfate.model.host import HostContext
from pktfate.model.kinds import Hook
from pktfate.output.human import WIDTH, HumanOutput, banner, describe, event_line

from .recorded import SERVER, Recorder, event

START = {"version": "0.1.0", "ports": [80], "hosts": [], "protos": ["tcp"], "netns": 4026531840,
         "all_netns": False, "xdp": {"eth0": "generic"}, "tc": ["eth0"], "missing": [],
         "leftovers": [], "duration": 0}


def _report(rec: Recorder, show_all: bool = False) -> list[str]:
    out = io.StringIO()
    human = HumanOutput(out, show_all=show_all)
    human.start(START)
    correlator = Correlator({SERVER}, (80,))
    batch = [(ev, None) for ev in rec.events]
    human.events(batch, correlator.feed_batch(batch))
    flows = correlator.finish()
    evidence = Evidence(flows, {"TcpInCsumErrors": 6}, (80,))
    human.finish(merge_flows(flows, (80,)), diagnose(evidence), WatchStats(), {},
                 HostContext())
    return out.getvalue().splitlines()


def test_checksum_report_reads_top_down():
    rec = Recorder()
    rec.ping(3)
    rec.syn(6, drop={"reason": "TCP_CSUM", "location": "tcp_v4_rcv+0x1a"})
    lines = _report(rec)
    assert lines[0] == "pktfate 0.1.0: watching tcp :80 (+ICMP), netns 4026531840"
    assert "  Ctrl-C to stop and see the diagnosis" in lines
    drops = [line for line in lines if "DROPPED TCP_CSUM at tcp_v4_rcv" in line]
    assert len(drops) == 6
    assert lines.index("FLOWS") < lines.index("DIAGNOSIS")
    top = lines[lines.index("DIAGNOSIS") + 1]
    assert top.startswith("1. [tcp-bad-checksum] TCP SYNs from 10.0.1.2 to :80 arrive")
    assert any(line.startswith("   fix: on the sender 10.0.1.2") for line in lines)
    assert max(map(len, lines)) <= WIDTH


def test_long_sentences_wrap_under_100_columns():
    rec = Recorder()
    rec.syn(2, drop={"reason": "A_REASON_NAME_THAT_IS_" + "VERY_" * 30 + "LONG",
                     "location": "f+0x1"})
    lines = _report(rec)
    assert max(map(len, lines)) <= WIDTH


def test_event_line_names_the_place_and_reason():
    rec = Recorder()
    (ev,) = [e for e in rec.syn(1, drop={"reason": "NO_SOCKET", "location": "tcp_v4_rcv+0x9"})
             if e.hook is Hook.XDP]
    assert "TCP 10.0.1.2:40000 > 10.0.2.2:80 [S]" in event_line(ev)
    assert "arrived xdp eth0 ttl 63" in event_line(ev)
    drop = rec.events[-1]
    assert "DROPPED NO_SOCKET at tcp_v4_rcv" in event_line(drop)


def test_a_tc_arrival_with_its_checksum_verdict_fits_whole():
    # The founding incident's line, with a 5-digit port: nothing cut at the edge.
    ev = event(hook="tc-ingress", sport=45854, checksum="pseudo-header-only")
    line = event_line(ev)
    assert line.endswith("[S]  arrived tc eth0 ttl 63 csum pseudo-header-only")
    assert len(line) < WIDTH


def test_banner_says_what_is_missing_and_what_is_left_over():
    lines = banner(dict(START, missing=["tcp:tcp_bad_csum (no such tracepoint)"],
                        leftovers=[4242], duration=5))
    assert "  missing: tcp:tcp_bad_csum (no such tracepoint)" in lines
    assert "  warning: run 4242 ended without detaching: run 'pktfate cleanup'" in lines
    assert lines[-1] == "  for 5s, then the diagnosis"


def test_banner_wraps_what_is_missing_under_100_columns():
    """On kernels without tcx links (6.1, 5.10) the start says what a kill -9 would
    leave behind: a sentence longer than a line (found by the suite run in 6.1)."""
    from pktfate.attach.hooks import AttachReport

    report = AttachReport()
    report.attach.update(xdp="netlink", tc="clsact")
    lines = banner(dict(START, missing=report.held_by_process()))
    assert max(map(len, lines)) < WIDTH + 1
    said = " ".join(line.strip() for line in lines)
    assert "missing: tc attached as clsact filters, not tcx links (kernel before 6.6): " \
        "after a kill -9, run pktfate cleanup" in said


def test_banner_says_where_generic_xdp_was_left_out():
    lines = banner(dict(START, xdp={}, xdp_left_out=["eth0", "eth1"]))
    assert "  XDP on none; tc on eth0" in lines
    assert "  generic XDP left out on eth0, eth1: tc ingress sees the same packets" in lines
    assert not any("left out" in line for line in banner(START))


def test_icmp_types_are_named_by_their_own_family():
    # ICMPv6's type 3 is time exceeded and its type 1 unreachable; ICMP's type 3 is
    # unreachable. One merged table once printed ICMPv6 time exceeded as unreachable.
    v6 = dict(proto="icmpv6", family=6, src="fd00:1::1", dst="fd00:2::2", tcp_flags=None,
              seq=None, ack=None, ip_id=None, checksum=None, icmp_code=0)
    assert describe(event(**v6, icmp_type=3)).endswith("time exceeded")
    assert describe(event(**v6, icmp_type=1)).endswith("unreachable")
    assert describe(event(**v6, icmp_type=2)).endswith("packet too big")
    v4 = dict(proto="icmp", tcp_flags=None, seq=None, ack=None, checksum=None, icmp_code=0)
    assert describe(event(**v4, icmp_type=3)).endswith("unreachable")
    assert describe(event(**v4, icmp_type=11)).endswith("time exceeded")


def test_a_drop_the_kernel_names_no_reason_for_says_so():
    # Kernels before 5.17 give kfree_skb no reason: never 'DROPPED None'.
    line = event_line(event(hook="drop", reason=None, location="tcp_v4_rcv+0x9", skb="0x1"))
    assert line.endswith("DROPPED without a reason at tcp_v4_rcv")
