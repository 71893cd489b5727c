"""Firewall rules: the packets netfilter drops or rejects on this host, told
apart by what the rules whose counters moved say (a DROP, a REJECT, conntrack's
INVALID state, a reverse-path match) and by conntrack's table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..correlate.correlator import Flow
from ..decode.events import PacketEvent
from ..host.firewall import ANY, attribute, chain_of, delete_command, is_policy, set_entry
from ..model.host import FirewallRule
from ..model.kinds import Fate
from ..model.protocols import proto_name
from .causes import Cause
from .evidence import Evidence, Finding
from .wording import contrast, dropped_line, flow_ref, iface_of, port_text, proto_label, what

NETFILTER_DROP = "NETFILTER_DROP"  # the kernel's reason for whatever netfilter drops

FIREWALL_DROP = Cause("firewall-drop", 80, "this host's firewall drops the packets silently")
RP_FILTER = Cause("rp-filter", 80, "reverse-path filtering (rp_filter, or netfilter's rpfilter "
                  "match for IPv6) drops packets whose route back leaves by another interface",
                  also_explains=(NETFILTER_DROP,))
CONNTRACK_FULL = Cause("conntrack-full", 82, "connection tracking's table is full: netfilter "
                       "drops new connections with no rule matching them",
                       also_explains=(NETFILTER_DROP,))
CONNTRACK_INVALID = Cause("conntrack-invalid", 82, "the firewall drops packets conntrack calls "
                          "INVALID: connections it has no entry for (flushed, failed over, seen "
                          "one way)", also_explains=(NETFILTER_DROP,))
FIREWALL_REJECT = Cause("firewall-reject", 80, "this host's firewall rejects the packets (RST "
                        "or ICMP in its name)", also_explains=(NETFILTER_DROP,))
CAUSES = (FIREWALL_DROP, RP_FILTER, CONNTRACK_FULL, CONNTRACK_INVALID, FIREWALL_REJECT)


def rule_firewall(ev: Evidence) -> list[Finding]:
    findings = []
    # Rules whose match covers some watched flow for certain: not another flow's
    # 'perhaps' (a flood from the service's port is not dropped by the service's rule).
    sets = ev.host.ipsets
    # Each flow's rules, attributed once (the rules' texts are parsed per flow).
    attributed = {flow.id: flow_rules(ev.firewall, flow, sets) for flow in ev.watched}
    claimed = {rule for mine, _unclear in attributed.values() for rule in mine}
    for flow in ev.watched:
        # The packets coming in: this host's own answers dropped on the way out are
        # paths.rule_answers_dropped_here's.
        dropped = flow.drops.get(NETFILTER_DROP, 0) - flow.drops_out.get(NETFILTER_DROP, 0)
        if dropped <= 0:
            continue
        rejected = flow.fates.get(Fate.REJECTED, 0) + sum(flow.icmp_errors_sent.values())
        # The rules whose counters moved and whose own match covers this flow's
        # packets: another flow's rule moving in the same watch is not this one's.
        mine, unclear = attributed[flow.id]
        unclear = sorted((r for r in unclear if r not in claimed), key=lambda r: -r.packets)
        if rejected:
            finding = Finding(
                FIREWALL_REJECT.id,
                f"The firewall rejects {what(flow, NETFILTER_DROP)} from {flow.peer} to "
                f"{port_text(flow)}: netfilter drops them and answers in this host's name "
                f"({rejected}/{flow.packets_in}).",
                flows=[flow_ref(flow, dropped)], count=dropped)
            answers = ", ".join(f"ICMP {c} x{n}" for c, n in flow.icmp_errors_sent.items())
            answers = answers or "a RST that TCP did not send"
            finding.evidence.append(dropped_line(flow, dropped, NETFILTER_DROP,
                                                  f", answered with {answers}"))
        elif _invalid_rules(mine + unclear):
            finding = _conntrack_invalid(ev, flow, dropped)
        elif _rpfilter_rules(mine + unclear):
            finding = _netfilter_rpfilter(flow, dropped)
        elif _conntrack_full(ev) and not mine + unclear:
            finding = _conntrack_table_full(ev, flow, dropped)
        else:
            finding = Finding(
                FIREWALL_DROP.id,
                f"The firewall silently drops {what(flow, NETFILTER_DROP)} from {flow.peer} "
                f"to {port_text(flow)} ({dropped}/{flow.packets_in}); the sender sees timeouts.",
                flows=[flow_ref(flow, dropped)], count=dropped)
            finding.evidence.append(dropped_line(flow, dropped, NETFILTER_DROP,
                                                  ", nothing sent back"))
        finding.evidence += contrast(ev, flow, f"dropped {dropped}/{flow.packets_in} "
                                               "(NETFILTER_DROP)")
        _name_the_rule(finding, flow, mine, unclear, "REJECT" if rejected else "DROP", sets)
        findings.append(finding)
    return findings


def _name_the_rule(finding: Finding, flow: Flow, mine: list[FirewallRule],
                   unclear: list[FirewallRule], verdict: str,
                   sets: Mapping[str, Sequence[str]]) -> None:
    """The rules that dropped the flow's packets, in the evidence, and the fix: a
    rule's removal, or an ACCEPT rule ahead of a chain's policy. A rule of its own
    comes before a policy, which also counts other flows' packets."""
    matched = sorted((r for r in mine if r.verdict == verdict), key=lambda r: is_policy(r.rule))
    for fw in matched[:3]:
        finding.evidence.append(_matched_line(fw, flow))
    banned = _in_set(matched[0], flow, sets) if matched else None
    if banned is not None:
        finding.evidence.append(f"{flow.peer} is in the ipset {banned[0]} (its entry "
                                f"{banned[1]}), which that rule matches on")
    if not matched:
        for fw in [r for r in unclear if r.verdict == verdict][:3]:
            finding.evidence.append(
                f"rule whose counter moved ({fw.packets} packets) during the watch, "
                f"though pktfate cannot tell from its match whether it is this flow's: "
                f"{fw.rule}")
    if finding.cause in (CONNTRACK_INVALID.id, RP_FILTER.id, CONNTRACK_FULL.id):
        return  # its own fix: the rule does what it should; the route or state is off
    if banned is not None:
        finding.fix = [f"if {flow.peer} should pass, take it out of the set: ipset del "
                       f"{banned[0]} {banned[1]} (whatever fills the set, a ban list such as "
                       "fail2ban, may add it again)",
                       f"or narrow the rule: {delete_command(matched[0].rule)}"]
    elif matched and is_policy(matched[0].rule):
        finding.fix = _accept_fix(matched[0], flow)
    elif matched:
        finding.fix = [f"remove or narrow that rule: {delete_command(matched[0].rule)}"]
    elif unclear_moved := [r for r in unclear if r.verdict == verdict]:
        finding.fix = ["if these packets should pass, the rule whose counter moved may be "
                       f"the one: {delete_command(unclear_moved[0].rule)} removes it"]
    else:
        finding.fix = [_find_the_rule(flow), "then delete or narrow it"]


def _in_set(rule: FirewallRule, flow: Flow,
            sets: Mapping[str, Sequence[str]]) -> tuple[str, str] | None:
    """(set, entry) when the rule matches the flow's peer by its membership in an
    ipset (`-m set --match-set NAME src`, as a ban list is kept)."""
    words = rule.rule.split()
    if "--match-set" not in words[:-2]:
        return None
    i = words.index("--match-set")
    name, side = words[i + 1], words[i + 2]
    if side != "src" or name not in sets:
        return None
    entry = set_entry(sets[name], flow.peer)
    return (name, entry) if entry is not None else None


def _matched_line(rule: FirewallRule, flow: Flow) -> str:
    if is_policy(rule.rule):
        return (f"the {chain_of(rule.rule)} chain's policy is {rule.verdict}: it dropped "
                f"{rule.packets} packets during the watch, those no rule of the chain "
                f"accepted ({rule.rule}); no rule accepts {proto_label(flow.proto)} "
                f"{port_text(flow)}")
    return f"rule that matched {rule.packets} packets during the watch: {rule.rule}"


def _accept_fix(policy: FirewallRule, flow: Flow) -> list[str]:
    """A default-deny chain: the fix is a rule that lets the service in, not the
    policy's removal."""
    tool = policy.rule.split()[0]
    proto = proto_name(flow.proto)
    port = flow.local_port
    chain = chain_of(policy.rule)
    allow = f"-p {proto} --dport {port}" if port is not None else f"-s {flow.peer}"
    return [f"let it in ahead of the policy: {tool} -I {chain} {allow} -j ACCEPT (with ufw: "
            f"ufw allow {port}/{proto}; with firewalld: firewall-cmd --add-port={port}/{proto}"
            " and --permanent)" if port is not None else
            f"let it in ahead of the policy: {tool} -I {chain} {allow} -j ACCEPT",
            f"then verify: {tool} -L {chain} -v -n shows the ACCEPT rule counting"]


def _find_the_rule(flow: Flow) -> str:
    """How to find the rule by hand: by the flow's port on this host, else by the
    peer's port, else by the peer."""
    if flow.local_port is not None:
        iptables, nft = f"dpt:{flow.local_port}", f"dport {flow.local_port}"
    elif flow.peer_port is not None:
        iptables, nft = f"spt:{flow.peer_port}", f"sport {flow.peer_port}"
    else:
        iptables = nft = flow.peer
    return (f"find the rule: iptables -L -v -n --line-numbers | grep '{iptables}' or "
            f"nft -a list ruleset | grep '{nft}'")


def flow_rules(rules: Sequence[FirewallRule], flow: Flow,
               sets: Mapping[str, Sequence[str]] | None = None,
               ) -> tuple[list[FirewallRule], list[FirewallRule]]:
    """Of the rules whose counters moved, those whose match covers the flow's packets
    (either way: arriving, or its answers leaving), and those pktfate cannot tell."""
    iface = next((a.iface for a, _ in flow.arrived_on.most_common() if a.iface), None)
    family = 6 if ":" in flow.local else 4
    proto = proto_name(flow.proto)
    # A flow merged over this host's ports (from a peer's watched port) went to any.
    local_port: int | str | None = flow.local_port
    if local_port is None and flow.proto.has_ports:
        local_port = ANY
    arriving = {"family": family, "direction": "in", "proto": proto, "src": flow.peer,
                "dst": flow.local, "sport": flow.peer_port, "dport": local_port,
                "iif": iface}
    leaving = {"family": family, "direction": "out", "proto": proto, "src": flow.local,
               "dst": flow.peer, "sport": local_port, "dport": flow.peer_port,
               "oif": iface}
    return attribute(rules, [arriving, leaving], lambda rule: rule.rule, sets)


def packet_rules(rules: Sequence[FirewallRule], ev: PacketEvent,
                 sets: Mapping[str, Sequence[str]] | None = None,
                 ) -> tuple[list[FirewallRule], list[FirewallRule]]:
    """Of the rules whose counters moved, those whose match covers this one packet as
    it was at the hook (a forwarded one: on any chain), and those pktfate cannot tell."""
    packet = {"family": ev.family, "proto": proto_name(ev.proto), "src": ev.src,
              "dst": ev.dst, "sport": ev.sport, "dport": ev.dport, "iif": ev.iface}
    return attribute(rules, [packet], lambda rule: rule.rule, sets)


def _invalid_rules(rules: list[FirewallRule]) -> list[FirewallRule]:
    """DROP rules on conntrack's INVALID state whose counters moved."""
    return [r for r in rules if r.verdict == "DROP" and
            ("ctstate INVALID" in r.rule or "state INVALID" in r.rule or
             "ct state invalid" in r.rule)]


def _conntrack_full(ev: Evidence) -> bool:
    """Whether conntrack's table was (nearly) full at the end of the watch: new
    connections are then dropped by netfilter with no rule's counter moving."""
    count = ev.sysctls.get("net.netfilter.nf_conntrack_count")
    limit = ev.sysctls.get("net.netfilter.nf_conntrack_max")
    return bool(count and limit and count >= 0.95 * limit)


def _conntrack_table_full(ev: Evidence, flow: Flow, dropped: int) -> Finding:
    count = ev.sysctls["net.netfilter.nf_conntrack_count"]
    limit = ev.sysctls["net.netfilter.nf_conntrack_max"]
    finding = Finding(
        CONNTRACK_FULL.id,
        f"Netfilter drops {what(flow, NETFILTER_DROP)} from {flow.peer} to {port_text(flow)} "
        f"({dropped}/{flow.packets_in}) with no rule matching them, while connection "
        f"tracking's table is full ({count} of {limit} entries): new connections get no "
        "entry and are dropped.", flows=[flow_ref(flow, dropped)], count=dropped,
        confidence="medium")
    finding.evidence.append(dropped_line(flow, dropped, NETFILTER_DROP, ", nothing sent "
                                          "back, and no DROP or REJECT rule's counter moved"))
    finding.evidence.append(f"net.netfilter.nf_conntrack_count={count}, "
                            f"net.netfilter.nf_conntrack_max={limit}")
    finding.fix = [
        "confirm: dmesg | grep 'nf_conntrack: table full'; conntrack -S (drop, early_drop)",
        "raise the table: sysctl -w net.netfilter.nf_conntrack_max=N (and the hash size "
        "with it), or shorten timeouts (net.netfilter.nf_conntrack_tcp_timeout_*)",
        "find what fills it: conntrack -L | awk '{print $5}' | sort | uniq -c | sort -n",
        "or exempt busy stateless traffic from tracking (iptables -t raw ... -j NOTRACK)",
    ]
    return finding


def _rpfilter_rules(rules: list[FirewallRule]) -> list[FirewallRule]:
    """DROP rules of netfilter's reverse-path match (IPv6 has no rp_filter sysctl)."""
    return [r for r in rules if r.verdict == "DROP" and
            ("-m rpfilter" in r.rule or "fib saddr" in r.rule)]


def _netfilter_rpfilter(flow: Flow, dropped: int) -> Finding:
    iface = iface_of(flow)
    finding = Finding(
        RP_FILTER.id, f"Reverse-path filtering (netfilter's rpfilter match) drops packets from "
        f"{flow.peer}: the route back to it does not leave through {iface}, where they "
        f"arrive ({dropped}/{flow.packets_in}).", flows=[flow_ref(flow, dropped)], count=dropped)
    finding.evidence.append(dropped_line(flow, dropped, NETFILTER_DROP))
    finding.fix = [
        f"compare: ip route get {flow.peer} (the way back) with {iface} (the way in)",
        f"route {flow.peer} back through {iface}, or add --loose to the rpfilter match (it "
        "then only asks for some route back)",
    ]
    return finding


def _conntrack_invalid(ev: Evidence, flow: Flow, dropped: int) -> Finding:
    loose = ev.sysctls.get("net.netfilter.nf_conntrack_tcp_loose")
    finding = Finding(
        CONNTRACK_INVALID.id,
        f"The firewall drops {what(flow, NETFILTER_DROP)} from {flow.peer} to {port_text(flow)} "
        f"as INVALID ({dropped}/{flow.packets_in}): connection tracking does not know the "
        "connection they belong to.", flows=[flow_ref(flow, dropped)], count=dropped)
    finding.evidence.append(dropped_line(flow, dropped, NETFILTER_DROP, ", nothing sent back"))
    if flow.syn_drops.get(NETFILTER_DROP, 0) < dropped:
        finding.evidence.append("the dropped packets are not SYNs: they belong to connections "
                                "conntrack has no entry for (flushed, timed out, failed over, "
                                "or seen only one way)")
    if loose is not None:
        finding.evidence.append(f"net.netfilter.nf_conntrack_tcp_loose={loose}"
                                + (": conntrack does not pick up connections it missed"
                                   if loose == 0 else ""))
    finding.fix = [
        "find why conntrack lost them: conntrack -S (the invalid counter), a conntrack -F or "
        "a failover, a table that was full, or an asymmetric route (answers leaving by "
        "another host)",
        "let conntrack pick up established connections again: sysctl -w "
        "net.netfilter.nf_conntrack_tcp_loose=1",
        "for asymmetric paths: route both directions through this host, or exempt the flow "
        "from tracking (iptables -t raw ... -j NOTRACK)",
    ]
    return finding
