"""The rule registry: every rule, in the order they run, with the causes each may
name, listed here and nowhere else; and every cause pktfate can name (the
table's, the rules', the accounting's). The README's cause list and the lab's
expected causes are held equal to it by tests."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Callable, NamedTuple

from . import accounting, firewall, handshakes, listeners, nat, paths
from .causes import Cause, from_table, table_cause
from .evidence import Evidence, Finding


class Rule(NamedTuple):
    check: Callable[[Evidence], list[Finding]]
    causes: tuple[Cause, ...]  # what its findings may name


RULES: tuple[Rule, ...] = (
    Rule(paths.rule_tcp_bad_checksum, (paths.TCP_BAD_CHECKSUM,)),
    Rule(paths.rule_udp_bad_checksum, (paths.UDP_BAD_CHECKSUM,)),
    Rule(paths.rule_ip_bad_checksum, (paths.IP_BAD_CHECKSUM,)),
    Rule(firewall.rule_firewall, firewall.CAUSES),
    Rule(listeners.rule_no_listener, (listeners.NO_LISTENER, listeners.LOCALHOST_ONLY)),
    Rule(listeners.rule_listen_overflow, (listeners.LISTEN_OVERFLOW,)),
    Rule(paths.rule_no_route_back, (table_cause(paths.NO_ROUTE),)),
    Rule(paths.rule_rp_filter, (firewall.RP_FILTER,)),
    Rule(paths.rule_ttl_expired, (paths.TTL_EXPIRED,)),
    Rule(paths.rule_never_arrived, (paths.NEVER_ARRIVED,)),
    Rule(paths.rule_answers_dropped_here, tuple(
        table_cause(c) for c in ("tc-drop", "qdisc-drop", "neighbour-failed", "no-route")) +
        (firewall.FIREWALL_DROP,)),
    Rule(paths.rule_answers_from_path, (paths.FORGED_RESET, paths.FORGED_ICMP_ERROR,
                                        paths.REFUSED_ON_PATH)),
    Rule(handshakes.rule_answers_lost, (handshakes.ANSWERS_LOST,)),
    Rule(handshakes.rule_syn_queue_full, (handshakes.SYN_QUEUE_FULL,)),
    Rule(handshakes.rule_pmtu_blackhole, (handshakes.PMTU_BLACKHOLE,)),
    Rule(nat.rule_forwarding_off, (nat.FORWARDING_OFF,)),
    Rule(nat.rule_nat_backend_unreachable, (nat.NAT_BACKEND_UNREACHABLE,)),
)


def _gather(causes: Iterable[Cause]) -> dict[str, Cause]:
    found: dict[str, Cause] = {}
    for cause in causes:
        known = found.setdefault(cause.id, cause)
        if known != cause:
            raise ValueError(f"cause {cause.id} declared twice, differently")
    return found


CAUSES: dict[str, Cause] = _gather([
    *from_table(), *(cause for rule in RULES for cause in rule.causes),
    *firewall.CAUSES, *listeners.CAUSES, *paths.CAUSES, *handshakes.CAUSES, *nat.CAUSES,
    *accounting.CAUSES])


def severity(cause_id: str) -> int:
    return CAUSES[cause_id].severity
