"""The rules: each looks at the evidence of a watch and returns findings. They run
at the end of `pktfate watch` and again, without root or kernel, in `pktfate
explain` on a recorded --json output."""

from __future__ import annotations

from collections import Counter

from ..correlate.correlator import ErrorIn, Flow, IcmpCode
from ..host.firewall import attribute, delete_command
from .context import listener_sockets, owners_text
from .evidence import Evidence, Finding
from .origin import forged_sentence, hop_of, ttl_story, usual_hop
from .registry import Cause, rule

PORT_UNREACHABLE, TIME_EXCEEDED = IcmpCode(3, 3), IcmpCode(11, 0)


# ---------------------------------------------------------------- wording helpers


def _port(flow: Flow) -> str:
    return f":{flow.local_port}" if flow.local_port is not None else ""


def flow_ref(flow: Flow, count: int) -> dict:
    conns = len(flow.members)
    label = flow.label + (f" ({conns} connections)" if conns > 1 else "")
    return {"flow": flow.id, "flows": flow.members, "label": label, "count": count}


def _what(flow: Flow, reason: str | None = None) -> str:
    """'TCP SYNs' or 'UDP datagrams' from the peer, for summaries; with a drop
    reason, what was dropped for it (SYNs only if every one was a SYN)."""
    if flow.proto == "tcp":
        syns = flow.syn_in if reason is None else \
            flow.syn_drops.get(reason, 0) >= flow.drops.get(reason, 0)
        return "TCP SYNs" if syns else "TCP segments"
    if flow.proto.startswith("icmp"):
        return f"{flow.proto.upper()} packets"
    return "UDP datagrams"


def arrivals(flow: Flow) -> str:
    seen = ", ".join(f"{n} at {where.hook} {where.iface}"
                     for where, n in flow.arrived_on.most_common(3))
    return f"{flow.packets_in} arrived ({seen})" if seen else "none seen arriving"


def _iface(flow: Flow) -> str:
    """The interface the flow's packets came in on, as far as anything saw."""
    ifaces = [a.iface for a in flow.arrived_on] + list(flow.drop_ifaces)
    return next((i for i in ifaces if i), "<iface>")


def drop_functions(flow: Flow, reason: str) -> Counter:
    """The kernel functions that freed the flow's packets for this reason -> count."""
    return Counter({site.function: n for site, n in flow.drop_sites.items()
                    if site.reason == reason})


def _where(flow: Flow, reason: str) -> str:
    """Where the kernel freed the flow's packets for this reason."""
    funcs = ", ".join(f for f, _ in drop_functions(flow, reason).most_common(2))
    return f" in {funcs}" if funcs else ""


def _dropped_line(flow: Flow, dropped: int, reason: str, tail: str = "") -> str:
    """'6 arrived (6 at xdp eth0); 6 dropped in tcp_v4_rcv with reason TCP_CSUM'."""
    inferred = reason in flow._inferred
    how = f" ({reason}, inferred below)" if inferred else f" with reason {reason}"
    return f"{arrivals(flow)}; {dropped} dropped{_where(flow, reason)}{how}{tail}"


def contrast(ev: Evidence, flow: Flow, outcome: str) -> list[str]:
    """'ICMP echo from X answered 5/5; TCP SYN to :80 from X dropped 6/6 (TCP_CSUM)'."""
    icmp = ev.icmp_with(flow.peer)
    if icmp is None or icmp is flow or not icmp.echo_requests_in:
        return []  # no ping to contrast with, or the flow is the ping
    answered = icmp.fates.get("answered", 0)
    return [f"ICMP echo from {flow.peer} answered {answered}/{icmp.echo_requests_in}; "
            f"{flow.proto.upper()} to {_port(flow)} from {flow.peer} {outcome}"]


def counter_lines(ev: Evidence, names: tuple[str, ...]) -> list[str]:
    return [f"kernel counter {name} +{ev.counters[name]} during the watch"
            for name in names if ev.counters.get(name)]


# ---------------------------------------------------------------- rules


def _checksum_rule(reason: str, cause: str, proto: str | None, counters: tuple[str, ...]):
    def check(ev: Evidence) -> list[Finding]:
        findings = []
        for flow in ev.flows:
            dropped = flow.drops.get(reason, 0)
            if not dropped or (proto and flow.proto != proto):
                continue
            finding = Finding(
                cause,
                f"{_what(flow)} from {flow.peer} to {_port(flow) or flow.local} arrive but this "
                f"kernel drops them ({dropped}/{flow.packets_in}) because their "
                f"{flow.proto.upper() if proto else 'IP header'} checksum is wrong.",
                flows=[flow_ref(flow, dropped)], count=dropped)
            finding.evidence.append(_dropped_line(flow, dropped, reason))
            offload = flow.checksums.get("pseudo-header-only", 0)
            if offload:
                finding.evidence.append(
                    f"{offload} arrived with only the pseudo-header sum in the checksum field: "
                    "the sender left the checksum to offload and nothing on the way completed it")
            if flow.bad_csum:
                finding.evidence.append(f"tcp:tcp_bad_csum fired {flow.bad_csum} times")
            if not (flow.synack_out or flow.rst_out or flow.icmp_errors_sent):
                finding.evidence.append("nothing was sent back: to the sender the port looks "
                                        "filtered (timeouts, no RST)")
            finding.evidence += counter_lines(ev, counters)
            finding.evidence += contrast(ev, flow, f"dropped {dropped}/{flow.packets_in} "
                                                   f"({reason})")
            finding.fix = [
                f"on the sender {flow.peer}: turn off transmit checksum offload on the interface "
                "that sends here: ethtool -K <iface> tx off",
                "or fix the device that forwards between them: it must complete the checksum "
                "(or recompute it) instead of copying the segment as it is",
            ]
            _local_offload(ev, flow, finding)
            finding.fix.append(f"then verify: nstat -az {counters[0]} stops growing and the "
                               "service answers")
            findings.append(finding)
        return findings

    check.__name__ = f"rule_{cause.replace('-', '_')}"
    return check


def _local_offload(ev: Evidence, flow: Flow, finding: Finding) -> None:
    """This host's own answers cross the same device: say if they would break too."""
    for iface in {a.iface for a in flow.arrived_on}:
        if iface and ev.offload.get(iface):
            finding.evidence.append(
                f"this host's {iface} also leaves transmit checksums to offload: its answers "
                "through the same device would arrive broken too")
            finding.fix.append(f"here as well, until the device is fixed: ethtool -K {iface} "
                               "tx off")
            return


rule(Cause("tcp-bad-checksum", 90, "the kernel drops TCP segments whose checksum is wrong "
           "(offload plus a forwarding device that does not complete it)"))(
    _checksum_rule("TCP_CSUM", "tcp-bad-checksum", "tcp", ("TcpInCsumErrors",)))
rule(Cause("udp-bad-checksum", 90, "the kernel drops UDP datagrams whose checksum is wrong"))(
    _checksum_rule("UDP_CSUM", "udp-bad-checksum", "udp", ("UdpInCsumErrors",)))
rule(Cause("ip-bad-checksum", 90, "the kernel drops packets whose IPv4 header checksum is "
           "wrong (a device rewrote the header without fixing it)"))(
    _checksum_rule("IP_CSUM", "ip-bad-checksum", None, ("IpInHdrErrors",)))


@rule(Cause("firewall-drop", 80, "this host's firewall drops the packets silently"),
      Cause("rp-filter", 80, "reverse-path filtering (rp_filter, or netfilter's rpfilter "
            "match for IPv6) drops packets whose route back leaves by another interface",
            also_explains=("NETFILTER_DROP",)),
      Cause("conntrack-full", 82, "connection tracking's table is full: netfilter drops new "
            "connections with no rule matching them", also_explains=("NETFILTER_DROP",)),
      Cause("conntrack-invalid", 82, "the firewall drops packets conntrack calls INVALID: "
            "connections it has no entry for (flushed, failed over, seen one way)",
            also_explains=("NETFILTER_DROP",)),
      Cause("firewall-reject", 80, "this host's firewall rejects the packets (RST or ICMP in "
            "its name)", also_explains=("NETFILTER_DROP",)))
def rule_firewall(ev: Evidence) -> list[Finding]:
    findings = []
    for flow in ev.watched:
        dropped = flow.drops.get("NETFILTER_DROP", 0)
        if not dropped:
            continue
        rejected = flow.fates.get("rejected", 0) + sum(flow.icmp_errors_sent.values())
        port = flow.local_port
        # The rules whose counters moved and whose own match covers this flow's
        # packets: another flow's rule moving in the same watch is not this one's.
        mine, unclear = flow_rules(ev.firewall, flow)
        if rejected:
            finding = Finding(
                "firewall-reject",
                f"The firewall rejects {_what(flow, 'NETFILTER_DROP')} from {flow.peer} to "
                f"{_port(flow)}: netfilter drops them and answers in this host's name "
                f"({rejected}/{flow.packets_in}).",
                flows=[flow_ref(flow, dropped)], count=dropped)
            answers = ", ".join(f"ICMP {c} x{n}" for c, n in flow.icmp_errors_sent.items())
            answers = answers or "a RST that TCP did not send"
            finding.evidence.append(_dropped_line(flow, dropped, "NETFILTER_DROP",
                                                  f", answered with {answers}"))
        elif _invalid_rules(mine + unclear):
            finding = _conntrack_invalid(ev, flow, dropped)
        elif _rpfilter_rules(mine + unclear):
            finding = _netfilter_rpfilter(flow, dropped)
        elif _conntrack_full(ev) and not mine + unclear:
            finding = _conntrack_table_full(ev, flow, dropped)
        else:
            finding = Finding(
                "firewall-drop",
                f"The firewall silently drops {_what(flow, 'NETFILTER_DROP')} from {flow.peer} "
                f"to {_port(flow)} ({dropped}/{flow.packets_in}); the sender sees timeouts.",
                flows=[flow_ref(flow, dropped)], count=dropped)
            finding.evidence.append(_dropped_line(flow, dropped, "NETFILTER_DROP",
                                                  ", nothing sent back"))
        finding.evidence += contrast(ev, flow, f"dropped {dropped}/{flow.packets_in} "
                                               "(NETFILTER_DROP)")
        verdict = "REJECT" if rejected else "DROP"
        matched = [r for r in mine if r["verdict"] == verdict]
        for fw in matched[:3]:
            finding.evidence.append(f"rule that matched {fw['packets']} packets during the "
                                    f"watch: {fw['rule']}")
        if not matched:
            for fw in [r for r in unclear if r["verdict"] == verdict][:3]:
                finding.evidence.append(
                    f"rule whose counter moved ({fw['packets']} packets) during the watch, "
                    f"though pktfate cannot tell from its match whether it is this flow's: "
                    f"{fw['rule']}")
        if finding.cause in ("conntrack-invalid", "rp-filter", "conntrack-full"):
            pass  # its own fix: the rule does what it should; the route or state is off
        elif matched:
            finding.fix = [f"remove or narrow that rule: {delete_command(matched[0]['rule'])}"]
        else:
            finding.fix = [
                f"find the rule: iptables -L -v -n --line-numbers | grep 'dpt:{port}' or "
                f"nft -a list ruleset | grep 'dport {port}'",
                "then delete or narrow it",
            ]
        findings.append(finding)
    return findings


def flow_rules(rules: list[dict], flow: Flow) -> tuple[list[dict], list[dict]]:
    """Of the rules whose counters moved, those whose match covers the flow's packets
    (either way: arriving, or its answers leaving), and those pktfate cannot tell."""
    iface = next((a.iface for a, _ in flow.arrived_on.most_common() if a.iface), None)
    family = 6 if ":" in flow.local else 4
    arriving = {"family": family, "direction": "in", "proto": flow.proto, "src": flow.peer,
                "dst": flow.local, "sport": flow.peer_port, "dport": flow.local_port,
                "iif": iface}
    leaving = {"family": family, "direction": "out", "proto": flow.proto, "src": flow.local,
               "dst": flow.peer, "sport": flow.local_port, "dport": flow.peer_port,
               "oif": iface}
    return attribute(rules, [arriving, leaving])


def _invalid_rules(rules: list[dict]) -> list[dict]:
    """DROP rules on conntrack's INVALID state whose counters moved."""
    return [r for r in rules if r["verdict"] == "DROP" and
            ("ctstate INVALID" in r["rule"] or "state INVALID" in r["rule"] or
             "ct state invalid" in r["rule"])]


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
        "conntrack-full",
        f"Netfilter drops {_what(flow, 'NETFILTER_DROP')} from {flow.peer} to {_port(flow)} "
        f"({dropped}/{flow.packets_in}) with no rule matching them, while connection "
        f"tracking's table is full ({count} of {limit} entries): new connections get no "
        "entry and are dropped.", flows=[flow_ref(flow, dropped)], count=dropped,
        confidence="medium")
    finding.evidence.append(_dropped_line(flow, dropped, "NETFILTER_DROP", ", nothing sent "
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


def _rpfilter_rules(rules: list[dict]) -> list[dict]:
    """DROP rules of netfilter's reverse-path match (IPv6 has no rp_filter sysctl)."""
    return [r for r in rules if r["verdict"] == "DROP" and
            ("-m rpfilter" in r["rule"] or "fib saddr" in r["rule"])]


def _netfilter_rpfilter(flow: Flow, dropped: int) -> Finding:
    iface = _iface(flow)
    finding = Finding(
        "rp-filter", f"Reverse-path filtering (netfilter's rpfilter match) drops packets from "
        f"{flow.peer}: the route back to it does not leave through {iface}, where they "
        f"arrive ({dropped}/{flow.packets_in}).", flows=[flow_ref(flow, dropped)], count=dropped)
    finding.evidence.append(_dropped_line(flow, dropped, "NETFILTER_DROP"))
    finding.fix = [
        f"compare: ip route get {flow.peer} (the way back) with {iface} (the way in)",
        f"route {flow.peer} back through {iface}, or add --loose to the rpfilter match (it "
        "then only asks for some route back)",
    ]
    return finding


def _conntrack_invalid(ev: Evidence, flow: Flow, dropped: int) -> Finding:
    loose = ev.sysctls.get("net.netfilter.nf_conntrack_tcp_loose")
    finding = Finding(
        "conntrack-invalid",
        f"The firewall drops {_what(flow, 'NETFILTER_DROP')} from {flow.peer} to {_port(flow)} "
        f"as INVALID ({dropped}/{flow.packets_in}): connection tracking does not know the "
        "connection they belong to.", flows=[flow_ref(flow, dropped)], count=dropped)
    finding.evidence.append(_dropped_line(flow, dropped, "NETFILTER_DROP", ", nothing sent back"))
    if flow.syn_drops.get("NETFILTER_DROP", 0) < dropped:
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


@rule(Cause("no-listener", 70, "nothing listens on the port: the kernel answers RST or ICMP "
            "port unreachable"),
      Cause("localhost-only", 72, "the service listens only on another address (127.0.0.1, "
            "::1 or another of this host's): connections to the address the peers use are "
            "refused", also_explains=("NO_SOCKET",)))
def rule_no_listener(ev: Evidence) -> list[Finding]:
    findings = []
    for flow in ev.watched:
        no_socket = flow.drops.get("NO_SOCKET", 0)
        if flow.proto == "tcp":
            answered = flow.fates.get("reset", 0)
            how = "RST"
        else:
            answered = flow.icmp_errors_sent.get(PORT_UNREACHABLE, 0)
            how = "ICMP port unreachable"
        if not answered or not (no_socket or flow.kernel_resets):
            continue
        elsewhere = listening_elsewhere(ev, flow)
        if elsewhere:
            findings.append(_listens_elsewhere(ev, flow, answered, how, elsewhere))
            continue
        dnat = next((r for r in flow.rewrites if r.kind == "dnat"), None)
        where = f"on {dnat.addr}:{dnat.port}, where this host's DNAT sends port " \
            f"{flow.local_port}" if dnat else f"on {flow.proto.upper()} port {flow.local_port} here"
        finding = Finding(
            "no-listener",
            f"Nothing listens {where}: the kernel answered {answered} {_what(flow)} from "
            f"{flow.peer} with {how}.", flows=[flow_ref(flow, answered)], count=answered)
        finding.evidence.append(f"{arrivals(flow)}; {answered} answered by the kernel with "
                                f"{how}, {no_socket} freed with reason NO_SOCKET")
        finding.evidence += counter_lines(ev, ("TcpOutRsts", "UdpNoPorts"))
        finding.evidence += contrast(ev, flow, f"refused {answered}/{flow.packets_in} ({how})")
        opt = "t" if flow.proto == "tcp" else "u"
        if dnat:
            finding.fix = [f"start the service on {dnat.addr} port {dnat.port} (the container or "
                           "backend behind the mapping), or point the mapping at its port"]
            findings.append(finding)
            continue
        finding.fix = [
            f"start the service on port {flow.local_port}, or make it listen on {flow.local}: "
            f"check with ss -l{opt}np 'sport = :{flow.local_port}'",
            "a service in a container or another network namespace does not listen here",
        ]
        findings.append(finding)
    return findings


WILDCARDS = ("0.0.0.0", "::")


def listening_elsewhere(ev: Evidence, flow: Flow) -> list[dict]:
    """The listening sockets on the flow's port that do not take its address (bound
    to 127.0.0.1, ::1 or another address of this host); [] when one does, or when
    nothing was recorded. IPv4 peers reach a '::' socket too (v4-mapped)."""
    sockets = listener_sockets(ev, flow.local_port)
    if flow.proto != "tcp" or not sockets:
        return []
    takes = {flow.local, f"::ffff:{flow.local}", *WILDCARDS}
    if any(s["addr"] in takes for s in sockets):
        return []
    return sockets


def _listens_elsewhere(ev: Evidence, flow: Flow, answered: int, how: str,
                       sockets: list[dict]) -> Finding:
    where = ", ".join(s["addr"] for s in sockets)
    finding = Finding(
        "localhost-only",
        f"The service on port {flow.local_port} listens on {where} only: connections to "
        f"{flow.local} are refused ({answered} {_what(flow)} from {flow.peer} answered with "
        f"{how}).", flows=[flow_ref(flow, answered)], count=answered)
    finding.evidence.append(f"{arrivals(flow)}; {answered} answered by the kernel with {how}")
    for sock in sockets:
        finding.evidence.append(f"listening on {sock['addr']}:{flow.local_port}: "
                                f"{owners_text(sock)}")
    finding.evidence += contrast(ev, flow, f"refused {answered}/{flow.packets_in} ({how})")
    finding.fix = [
        f"make the service listen on {flow.local} or on every address (0.0.0.0 or ::): its "
        "bind or listen setting, e.g. --bind 0.0.0.0, listen 0.0.0.0:"
        f"{flow.local_port}, or [::]:{flow.local_port}",
        f"then verify: ss -ltnp 'sport = :{flow.local_port}' shows 0.0.0.0 or {flow.local}",
    ]
    return finding


@rule(Cause("listen-overflow", 75, "the listener's accept queue is full: the application does "
            "not accept fast enough", explains_unanswered=True))
def rule_listen_overflow(ev: Evidence) -> list[Finding]:
    flows = [f for f in ev.watched if f.drops.get("TCP_LISTEN_OVERFLOW")]
    # ListenDrops alone is not enough: it also counts SYNs with no route back.
    moved = ev.counters.get("TcpExtListenOverflows", 0)
    if not flows and not moved:
        return []
    count = sum(f.drops.get("TCP_LISTEN_OVERFLOW", 0) for f in flows) or moved
    port = flows[0].local_port if flows else (ev.ports[0] if ev.ports else "?")
    finding = Finding(
        "listen-overflow",
        f"The listening socket on :{port} has a full accept queue: the kernel drops new "
        "connections until the application accepts the ones waiting.",
        flows=[flow_ref(f, f.drops.get("TCP_LISTEN_OVERFLOW", 0)) for f in flows], count=count)
    for flow in flows:
        finding.evidence.append(_dropped_line(flow, flow.drops["TCP_LISTEN_OVERFLOW"],
                                              "TCP_LISTEN_OVERFLOW"))
    finding.evidence += counter_lines(ev, ("TcpExtListenOverflows", "TcpExtListenDrops"))
    finding.fix = [
        f"see the queue: ss -ltn 'sport = :{port}' (Recv-Q = waiting, Send-Q = backlog)",
        "make the application accept faster, or raise its listen() backlog and "
        "net.core.somaxconn",
    ]
    return [finding]


@rule("no-route")
def rule_no_route_back(ev: Evidence) -> list[Finding]:
    """SYNs accepted but never answered, and the kernel counted output packets it
    could not route: the answer has nowhere to go."""
    no_routes = ev.counters.get("IpOutNoRoutes", 0)
    findings = []
    for flow in ev.watched:
        unanswered = flow.syn_fates.get("unanswered", 0)
        if not unanswered or flow.drops or not (no_routes or flow.peer in ev.routes):
            continue
        route = ev.routes.get(flow.peer)
        if route and route.get("oif"):
            continue
        finding = Finding(
            "no-route",
            f"SYNs from {flow.peer} to {_port(flow)} arrive, but this host has no route back "
            f"to {flow.peer}: no SYN-ACK can leave ({unanswered} unanswered).",
            flows=[flow_ref(flow, unanswered)], count=unanswered)
        finding.evidence.append(f"{arrivals(flow)}; {unanswered} SYNs neither answered nor "
                                "dropped")
        if route is not None:
            finding.evidence.append(f"ip route get {flow.peer}: no route")
        finding.evidence += counter_lines(ev, ("IpOutNoRoutes", "TcpExtListenDrops"))
        finding.evidence += contrast(ev, flow, f"unanswered {unanswered}/{flow.syn_in}")
        finding.fix = [f"add a route back: ip route add {flow.peer} via <gateway> (or a "
                       "default route: ip route add default via <gateway>)",
                       f"check: ip route get {flow.peer}"]
        findings.append(finding)
    return findings


@rule("rp-filter")
def rule_rp_filter(ev: Evidence) -> list[Finding]:
    findings = []
    for flow in ev.flows:
        dropped = flow.drops.get("IP_RPFILTER", 0)
        if not dropped:
            continue
        iface = _iface(flow)
        route = ev.routes.get(flow.peer, {})
        back = route.get("oif")
        if back:
            why = f"the route back to {flow.peer} leaves through {back}, not {iface} where " \
                  "they arrive"
        elif flow.peer in ev.routes:
            why = f"this host has no route back to {flow.peer}"
        else:
            why = f"the route back to {flow.peer} does not leave through {iface}, where they " \
                  "arrive"
        finding = Finding(
            "rp-filter", f"Reverse-path filtering drops packets from {flow.peer}: {why}.",
            flows=[flow_ref(flow, dropped)], count=dropped)
        finding.evidence.append(_dropped_line(flow, dropped, "IP_RPFILTER"))
        settings = route.get("rp_filter", {})
        if settings:
            finding.evidence.append("reverse-path filter settings (1 strict, 2 loose; the "
                                    "higher of 'all' and the interface's counts): " +
                                    ", ".join(f"net.ipv4.conf.{k}.rp_filter={v}"
                                              for k, v in settings.items()))
        finding.fix = [
            f"compare: ip route get {flow.peer} (the way back) with {iface} (the way in)",
            f"route {flow.peer} back through {iface}, or make the check loose: sysctl -w "
            f"net.ipv4.conf.{iface}.rp_filter=2 and net.ipv4.conf.all.rp_filter=2",
        ]
        findings.append(finding)
    return findings


@rule(Cause("ttl-expired", 65, "packets run out of TTL here: a routing loop or a TTL set too "
            "low"))
def rule_ttl_expired(ev: Evidence) -> list[Finding]:
    findings = []
    for flow in ev.flows:
        expired = flow.icmp_errors_sent.get(TIME_EXCEEDED, 0)
        if expired:
            findings.append(Finding(
                "ttl-expired", f"Packets from {flow.peer} ran out of TTL here ({expired}): "
                "a routing loop, or a sender's TTL set too low.",
                flows=[flow_ref(flow, expired)], count=expired, confidence="medium",
                evidence=[f"{expired} answered with ICMP time exceeded"],
                fix=[f"traceroute {flow.peer} from both sides, looking for a loop"]))
    return findings


@rule(Cause("never-arrived", 60, "no watched packet reached this host: the problem is "
            "upstream"))
def rule_never_arrived(ev: Evidence) -> list[Finding]:
    if any(f.packets_in for f in ev.watched):
        return []
    ports = ", ".join(f":{p}" for p in ev.ports) or "the watched flows"
    finding = Finding(
        "never-arrived",
        f"No packet to {ports} reached this host's interfaces during the watch: the "
        "problem is upstream (the client, a firewall or a router on the way).",
        confidence="medium")
    for flow in ev.flows:
        if flow.proto.startswith("icmp") and flow.packets_in:
            finding.evidence.append(f"ICMP from {flow.peer} did arrive ({flow.packets_in}), "
                                    "so the path itself works")
    port = ev.ports[0] if ev.ports else "<port>"
    finding.fix = [f"from the client: traceroute -T -p {port} <this host> (or mtr -T -P {port}) "
                   "to find where the path stops"]
    return [finding]


def _own_ttls(ev: Evidence, peer: str) -> Counter:
    """TTLs of the peer's own packets: everything it sent but RSTs and ICMP errors,
    the answers a device on the way can forge."""
    own: Counter = Counter()
    for flow in ev.flows:
        if flow.peer == peer:
            own.update(flow.peer_ttls)
            own.subtract(flow.reset_ttls)
            own.subtract(flow.error_ttls)
    return +own


ICMP_ERROR_NAMES = {IcmpCode(3, 3): "port unreachable", IcmpCode(3, 1): "host unreachable",
                    IcmpCode(3, 0): "net unreachable",
                    IcmpCode(3, 13): "administratively prohibited",
                    IcmpCode(3, 10): "host prohibited", IcmpCode(3, 9): "net prohibited",
                    IcmpCode(11, 0): "time exceeded", IcmpCode(3, 4): "fragmentation needed"}


@rule(Cause("forged-reset", 85, "RSTs in the peer's name come from a device on the path"),
      Cause("forged-icmp-error", 85, "ICMP errors in the peer's name come from a device on the "
            "path"),
      Cause("refused-on-path", 85, "a device on the path answers with an ICMP error"))
def rule_answers_from_path(ev: Evidence) -> list[Finding]:
    """RSTs and ICMP errors that a device on the path sent: told by their TTL, or by
    the address an ICMP error names."""
    findings = []
    own_by_peer: dict[str, Counter] = {}
    for flow in ev.watched:
        if not flow.reset_ttls and not flow.errors_in:
            continue
        if flow.peer not in own_by_peer:
            own_by_peer[flow.peer] = _own_ttls(ev, flow.peer)
        own_ttls = own_by_peer[flow.peer]
        own = usual_hop(own_ttls)
        resets = sum(flow.reset_ttls.values())
        if resets and own and usual_hop(flow.reset_ttls) != own:
            findings.append(_forged_reset(flow, own, own_ttls, resets))
        for error, count in flow.errors_in.items():
            findings += _error_from_path(flow, error, count, own)
    return findings


def _forged_reset(flow: Flow, own: int, own_ttls: Counter, resets: int) -> Finding:
    ttl = int(flow.reset_ttls.most_common(1)[0][0])
    what = f"TCP{_peer_port(flow)} to {flow.peer}"
    return Finding(
        "forged-reset",
        f"The RSTs that end {what} are not sent by {flow.peer}: a device "
        f"{'before' if hop_of(ttl) < own else 'beyond'} it on the path forges them in its name.",
        flows=[flow_ref(flow, resets)], count=resets,
        evidence=[forged_sentence(f"{resets} RST{'s' if resets > 1 else ''}", flow.peer, ttl,
                                  own, "other packets", count=resets) +
                  f" (TTLs of its other packets: {_ttls(own_ttls)})"],
        fix=[f"find the device at hop {hop_of(ttl)}: pktfate probe {flow.peer} "
             f"--port {flow.peer_port or '<port>'}/tcp (or traceroute -T); then its rule that "
             f"rejects{_peer_port(flow)} with tcp-reset. {flow.peer} is not the one refusing."])


def _error_from_path(flow: Flow, error: ErrorIn, count: int, own: int | None) -> list[Finding]:
    code, sender, ttl = error.icmp, error.sender, error.ttl
    name = ICMP_ERROR_NAMES.get(code, f"ICMP error {code}")
    what = f"{flow.proto.upper()}{_peer_port(flow)} to {flow.peer}"
    if sender != flow.peer:
        return [Finding(
            "refused-on-path",
            f"{what} is refused on the way: {sender}, a device on the path, answers with "
            f"ICMP {name}.", flows=[flow_ref(flow, count)], count=count,
            evidence=[f"{count} ICMP {code} ({name}) from {sender}, {ttl_story(ttl)}, quoting "
                      f"packets to {flow.peer}"],
            fix=[f"look at the filters and routes of {sender} for {what}"])]
    if own and hop_of(ttl) != own:
        return [Finding(
            "forged-icmp-error",
            f"The ICMP {name} answers for {what} are not sent by {flow.peer}: a device on the "
            "path sends them in its name.", flows=[flow_ref(flow, count)], count=count,
            evidence=[forged_sentence(f"{count} ICMP {name}", flow.peer, ttl, own,
                                      "other packets", count=count)],
            fix=[f"find the device at hop {hop_of(ttl)}: pktfate probe {flow.peer} --port "
                 f"{flow.peer_port or '<port>'}/{flow.proto}"])]
    return []


def _peer_port(flow: Flow) -> str:
    return f" :{flow.peer_port}" if flow.peer_port is not None else ""


def _ttls(ttls: Counter) -> str:
    return ", ".join(f"{ttl} x{n}" for ttl, n in sorted(ttls.items())) or "none"


