"""A request's fate end to end, on recorded evidence (issue 33): a forwarded or
translated request is answered only when its answer comes back, a refusal from a
container behind a port mapping is the container's, and packets from a peer's
port that happens to be the watched one neither lead the diagnosis nor change
the watched service's counts. No text pktfate writes says None or leaves a port
or an address empty."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from pktfate.correlate.correlator import Correlator
from pktfate.decode.events import KernelCount
from pktfate.decode.recording import event_of_json
from pktfate.diagnosis.diagnose import diagnose
from pktfate.diagnosis.evidence import Evidence
from pktfate.model.kinds import Hook
from pktfate.model.protocols import Proto, TcpFlags
from pktfate.output.human import event_line
from pktfate.watch import run_explain

from .recorded import CLIENT, SERVER, Recorder, host_context

DATA = Path(__file__).resolve().parents[1] / "data"
BACKEND = "172.30.0.2"


def test_a_mapped_port_reset_behind_it_is_refused_never_healthy():
    # The backend is not a namespace of this host: only its RST, coming back
    # through here, tells. Forwarded, then reset: not 'healthy: forwarded'.
    rec = Recorder()
    for i in range(3):
        ident = {"ip_id": 10 + i, "seq": 100 + i, "sport": 41000 + i, "dport": 8100}
        rec.add(hook="tc-ingress", skb="0x10", **ident)
        rec.add(hook="tc-egress", skb="0x10", iface="ctr0", dst=BACKEND, dport=80,
                tracked=True, **{k: v for k, v in ident.items() if k != "dport"})
        rec.add(hook="tc-egress", src=SERVER, dst=CLIENT, sport=8100, dport=41000 + i,
                tcp_flags="RA", seq=0, ack=101 + i, ip_id=0, skb="0x20")
    findings = rec.findings(ports=(8100,))
    causes = [f.cause for f in findings]
    assert causes[0] == "no-listener" and "healthy" not in causes
    assert f"Nothing listens on {BACKEND}:80, where this host's DNAT sends port 8100" in \
        findings[0].summary
    assert findings[0].count == 3


def _explain(path: Path) -> list[dict]:
    out = io.StringIO()
    with path.open("rb") as stream:
        run_explain(stream, out, True)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_container_listening_on_its_own_loopback_is_named_with_its_namespace():
    # Recorded live: the container's own RST and NO_SOCKET drop, followed by the
    # SYN's skb into its namespace, and its listener on 127.0.0.1 read there.
    lines = _explain(DATA / "lab" / "nat-backend-loopback.jsonl")
    findings = lines[-1]["findings"]
    assert [f["cause"] for f in findings] == ["localhost-only"]
    top = findings[0]
    assert top["summary"].startswith(f"Port 8100 is mapped to {BACKEND}:80, a network "
                                     "namespace of this host")
    assert "listens on 127.0.0.1 only" in top["summary"]
    assert any(re.match(r"in namespace \d+: listening on 127\.0\.0\.1:80: python3", line)
               for line in top["evidence"])
    assert any(fix.startswith("then verify: nsenter --net=/proc/") for fix in top["fix"])
    recorded = [json.loads(line) for line in
                (DATA / "lab" / "nat-backend-loopback.jsonl").read_text().splitlines()]
    followed = [p for p in recorded if p["kind"] == "packet" and p["tracked"] and
                p["hook"] in ("drop", "rst-sent")]
    assert {p["hook"] for p in followed} == {"drop", "rst-sent"}
    assert recorded[0]["netns"] not in {p["netns"] for p in followed}  # the container's


def _noisy_server():
    """The watched service :8118 drops 6 SYNs at the firewall, while a flood from
    the same peer's source port 8118 to the firewalled :9999 is dropped too (82
    in the kernel's exact counts, 20 of them sent as events)."""
    rec = Recorder()
    for i in range(6):
        ident = {"ip_id": 100 + i, "seq": 1000, "sport": 40000, "dport": 8118}
        rec.add(hook="tc-ingress", **ident)
        rec.add(hook="drop", reason="NETFILTER_DROP", location="nf_hook_slow+0x44", skb="0x1",
                **ident)
    for i in range(20):
        ident = {"ip_id": 5000 + i, "seq": 7000 + i, "sport": 8118, "dport": 9999}
        rec.add(hook="tc-ingress", **ident)
        rec.add(hook="drop", reason="NETFILTER_DROP", location="nf_hook_slow+0x44", skb="0x2",
                **ident)
    syn = TcpFlags.SYN
    counts = [KernelCount(Hook.TC_INGRESS, Proto.TCP, CLIENT, SERVER, None, 8118, syn, None,
                          None, 6),
              KernelCount(Hook.KFREE_SKB, Proto.TCP, CLIENT, SERVER, None, 8118, syn, None,
                          "NETFILTER_DROP", 6),
              KernelCount(Hook.TC_INGRESS, Proto.TCP, CLIENT, SERVER, 8118, None, syn, None,
                          None, 82),
              KernelCount(Hook.KFREE_SKB, Proto.TCP, CLIENT, SERVER, 8118, None, syn, None,
                          "NETFILTER_DROP", 82)]
    correlator = Correlator({SERVER}, (8118,))
    for ev in rec.events:
        correlator.feed(ev)
    rules = [{"rule": f"iptables -t filter -A INPUT -p tcp -m tcp --dport {port} -j DROP",
              "packets": n, "verdict": "DROP"} for port, n in ((8118, 6), (9999, 82))]
    return diagnose(Evidence(correlator.finish(), {}, (8118,), 0, sampled=62,
                             kernel_counts=counts, host=host_context(firewall=rules)))


def test_a_flood_from_the_watched_port_neither_leads_nor_changes_the_services_counts():
    findings = _noisy_server()
    service, flood = findings
    assert (service.cause, service.count) == ("firewall-drop", 6)
    assert "from 10.0.1.2 to :8118 (6/6)" in service.summary
    assert service.fix == ["remove or narrow that rule: iptables -t filter -D INPUT -p tcp -m "
                           "tcp --dport 8118 -j DROP"]
    assert (flood.cause, flood.count) == ("firewall-drop", 82)
    assert flood.evidence[0].startswith("not the watched service (:8118 on this host): these "
                                        "packets come from port 8118 on the peer's side")
    # Its rule is the one that moved without matching the service: :9999's.
    assert flood.fix == ["if these packets should pass, the rule whose counter moved may be "
                         "the one: iptables -t filter -D INPUT -p tcp -m tcp --dport 9999 -j "
                         "DROP removes it"]


# Words that say a value was missing where text was made of it.
EMPTY = re.compile(r"\bNone\b|\bnull\b|\bUNKNOWN\b|:None|dpt: |to  |from  |\( \)|:'|: ,")


def _texts_of(finding: dict) -> list[str]:
    return [finding["summary"], *finding["evidence"], *finding["fix"],
            *(ref["label"] for ref in finding["flows"])]


@pytest.mark.parametrize("path", sorted([*DATA.glob("*.jsonl"), *DATA.glob("lab/*.jsonl")]),
                         ids=lambda p: p.stem)
def test_no_text_says_none_or_leaves_a_port_or_address_empty(path):
    lines = _explain(path)
    texts = [text for finding in lines[-1]["findings"] for text in _texts_of(finding)]
    out = io.StringIO()
    with path.open("rb") as stream:
        run_explain(stream, out, False)
    texts += out.getvalue().splitlines()  # the flows and the diagnosis, as printed
    texts += event_lines(path)  # each packet as the live watch prints it
    assert [text for text in texts if EMPTY.search(text)] == []


def event_lines(path: Path) -> list[str]:
    """The human output's line for every packet event of a recording."""
    return [event_line(event_of_json(line)) for line in map(json.loads,
            path.read_text().splitlines()) if line["kind"] == "packet"]


def test_the_noisy_servers_texts_say_no_none_either():
    texts = [text for finding in _noisy_server()
             for text in (finding.summary, *finding.evidence, *finding.fix)]
    assert [text for text in texts if EMPTY.search(text)] == []


def test_answers_this_host_drops_on_the_way_out_are_not_sent():
    # Recorded live: another tool's tc program at the server's egress drops its
    # SYN-ACKs (TC_EGRESS in __dev_queue_xmit, on the server): dropped here, by that
    # program, never 'sent', and no guess at the path back.
    lines = _explain(DATA / "lab" / "tc-egress-drop.jsonl")
    findings = lines[-1]["findings"]
    assert [f["cause"] for f in findings] == ["tc-drop"]
    top = findings[0]
    assert "drops its own SYN-ACKs on the way out" in top["summary"]
    assert "tc egress program on eth0: drop_synack" in top["evidence"]
    (flow,) = [line for line in lines if line["kind"] == "flow" and line["proto"] == "tcp"]
    assert flow["drops_out"] == {"TC_EGRESS": flow["synack_out"]}
    assert "answered" not in flow["syn_fates"] and flow["syn_fates"]["answer-dropped"] > 0


def test_a_default_deny_chain_gets_an_accept_rule_not_a_grep_for_a_port():
    # Recorded live: INPUT's policy DROP (what ufw and firewalld leave), no rule
    # naming :80. The policy's counter moved; the fix lets the service in.
    findings = _explain(DATA / "lab" / "default-deny.jsonl")[-1]["findings"]
    top = findings[0]
    assert top["cause"] == "firewall-drop"
    assert any(line.startswith("the INPUT chain's policy is DROP") for line in top["evidence"])
    assert top["fix"][0].startswith("let it in ahead of the policy: iptables -I INPUT -p tcp "
                                    "--dport 80 -j ACCEPT")
    assert not any("grep" in fix for fix in top["fix"])


def test_a_chains_policy_is_read_with_its_counter():
    from pktfate.host.firewall import chain_of, is_policy, moved_verdict_rules, parse_iptables_save

    before = parse_iptables_save("*filter\n:INPUT DROP [2:120]\n:OUTPUT ACCEPT [9:540]\n"
                                 "[0:0] -A INPUT -p icmp -j ACCEPT\nCOMMIT\n")
    after = parse_iptables_save("*filter\n:INPUT DROP [5:300]\n:OUTPUT ACCEPT [12:720]\n"
                                "[4:240] -A INPUT -p icmp -j ACCEPT\nCOMMIT\n")
    (moved,) = moved_verdict_rules(before, after)
    assert moved == {"rule": "iptables -t filter -P INPUT DROP", "packets": 3, "verdict": "DROP"}
    assert is_policy(moved["rule"]) and chain_of(moved["rule"]) == "INPUT"


def test_a_busy_servers_service_leads_with_its_own_count_live():
    # Recorded live (busy-server): 200 SYNs from the client's port 8118 to a
    # firewalled :9999, UDP and ACKs from it to closed ports, and curl to :8118,
    # whose SYNs the firewall drops.
    lines = _explain(DATA / "lab" / "busy-server.jsonl")
    recorded = [json.loads(line) for line in
                (DATA / "lab" / "busy-server.jsonl").read_text().splitlines()]
    syns = [p for p in recorded if p["kind"] == "packet" and p["hook"] == "tc-ingress" and
            p["dport"] == 8118 and p["tcp_flags"] == "S"]
    findings = lines[-1]["findings"]
    top = findings[0]
    assert (top["cause"], top["count"]) == ("firewall-drop", len(syns))
    assert top["fix"] == ["remove or narrow that rule: iptables -t filter -D INPUT -p tcp -m "
                          "tcp --dport 8118 -j DROP"]
    assert all(f["evidence"][0].startswith("not the watched service") for f in findings[1:])


def test_a_ban_list_names_the_set_and_the_peers_entry():
    # Recorded live: the client's address in an ipset an INPUT rule drops (the rule
    # names no port): the fix takes the peer out of the set.
    top = _explain(DATA / "lab" / "ipset-ban.jsonl")[-1]["findings"][0]
    assert top["cause"] == "firewall-drop"
    assert f"{CLIENT} is in the ipset pktfate-banned (its entry {CLIENT}), which that rule " \
           "matches on" in top["evidence"]
    assert top["fix"][0].startswith(f"if {CLIENT} should pass, take it out of the set: ipset "
                                    f"del pktfate-banned {CLIENT}")


def test_a_set_rule_covers_a_peer_by_its_membership_only():
    from pktfate.host.firewall import covers

    rule = "iptables -t filter -A INPUT -p tcp -m set --match-set banned src -j DROP"
    packet = {"family": 4, "direction": "in", "proto": "tcp", "src": CLIENT, "dst": SERVER,
              "dport": 80}
    assert covers(rule, packet) is None  # the set's entries unknown
    from pktfate.host.firewall import _covers, _parsed

    assert _covers(_parsed(rule), packet, {"banned": ["10.0.1.0/24"]}) is True
    assert _covers(_parsed(rule), packet, {"banned": ["192.0.2.1"]}) is False


def test_a_syn_answered_on_its_retry_is_one_attempt_answered():
    # The first SYN finds a neighbour entry being resolved and goes unanswered; the
    # peer sends it again (same sequence), that one is answered and the connection
    # completes: healthy, not 'unanswered' for the first copy.
    rec = Recorder()
    for ip_id in (10, 11):  # the same SYN, sent twice
        rec.add(hook="tc-ingress", ip_id=ip_id, seq=500)
    rec.add(hook="tc-egress", src=SERVER, dst=CLIENT, sport=80, dport=40000, tcp_flags="SA",
            seq=900, ack=501, ip_id=0)
    rec.add(hook="tc-ingress", tcp_flags="A", ip_id=12, seq=501, ack=901)
    findings = rec.findings()
    assert [f.cause for f in findings] == ["healthy"]
