"""Who really sent an answer: hop distances from TTLs.

Hosts and routers start their packets at a TTL of 32, 64, 128 or 255 and every
router on the way takes one off. The received TTL therefore gives the sender's
distance, in traceroute's numbering: hop 1 is the first device a packet reaches
(a TTL of 1 expires there). An RST or an ICMP error that carries the server's
address but comes from a different distance than the server's own packets was
sent by a device on the path. Pure logic, shared by `probe` and `watch`.
"""

from __future__ import annotations

from collections import Counter

INITIAL_TTLS = (32, 64, 128, 255)


def initial_ttl(ttl: int) -> int:
    """The smallest usual starting TTL the received one can have come from."""
    return next(start for start in INITIAL_TTLS if ttl <= start)


def hop_of(ttl: int) -> int:
    """The sender's hop number: 1 for a neighbour whose packets arrive untouched."""
    return initial_ttl(ttl) - ttl + 1


def ttl_story(ttl: int, v6: bool = False) -> str:
    """'TTL 63 (initial 64, hop 2)'; IPv6 calls the same field the hop limit."""
    return f"{'hop limit' if v6 else 'TTL'} {ttl} (initial {initial_ttl(ttl)}, hop {hop_of(ttl)})"


def usual_hop(ttls: Counter[int]) -> int | None:
    """The hop most of these received TTLs point to, None without any."""
    hops: Counter[int] = Counter()
    for ttl, count in ttls.items():
        hops[hop_of(int(ttl))] += count
    return hops.most_common(1)[0][0] if hops else None


def answered_by(answer_from: str | None, answer_hop: int | None, target: str,
                target_hop: int | None) -> str:
    """"target", "path" or "unknown" for an answer that claims `answer_from`."""
    if answer_from is None or answer_hop is None:
        return "unknown"
    if answer_from != target:
        return "path"  # a router's ICMP error names the router
    if target_hop is None:
        return "unknown"
    return "target" if answer_hop == target_hop else "path"


def forged_sentence(what: str, claimed: str, ttl: int, target_hop: int, reference: str,
                    device: str | None = None, count: int = 1) -> str:
    """The operator's conclusion about answers that did not come from `claimed`."""
    hop = hop_of(ttl)
    who = f"the device at hop {hop}" + (f" ({device})" if device else "")
    nearer = "closer than" if hop < target_hop else "farther than"
    claims, arrived = ("claim", "arrive") if count > 1 else ("claims", "arrived")
    story = ttl_story(ttl, v6=":" in claimed)
    return (f"{what} {claims} to come from {claimed} but {arrived} with {story}, while "
            f"{claimed}'s {reference} come from hop {target_hop}: {who}, {nearer} "
            f"{claimed}, sent it")
