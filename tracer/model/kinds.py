"""pktfate's own kinds: the hooks that see packets, the fates a packet can meet,
its direction through this host, the kernel's checksum verdict, where in the
kernel something happened. Each enum's JSON name is declared here once: the
output writes it and the recording reader reads it back by the same table."""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple

from .protocols import OpenIntEnum, TcpState


class Hook(OpenIntEnum):
    """enum pf_hook in bpf/event.h, member for member (PF_HOOK_<name>)."""

    XDP = 1
    TC_INGRESS = 2
    TC_EGRESS = 3
    KFREE_SKB = 4
    TCP_BAD_CSUM = 5
    TCP_SEND_RESET = 6
    ICMP_SEND = 7
    SOCK_STATE = 8

    @classmethod
    def _unknown_name(cls, value: int) -> str:
        """A hook a newer kernel side sends: kept by number, handled by no one."""
        return f"HOOK{value}"

    @property
    def is_arrival(self) -> bool:
        return self in ARRIVAL_HOOKS


ARRIVAL_HOOKS = frozenset({Hook.XDP, Hook.TC_INGRESS})
INTERFACE_HOOKS = frozenset({Hook.XDP, Hook.TC_INGRESS, Hook.TC_EGRESS})

# Each hook's name in events, output and JSON (the README's contract).
HOOK_NAMES = {
    Hook.XDP: "xdp",
    Hook.TC_INGRESS: "tc-ingress",
    Hook.TC_EGRESS: "tc-egress",
    Hook.KFREE_SKB: "drop",
    Hook.TCP_BAD_CSUM: "tcp-bad-csum",
    Hook.TCP_SEND_RESET: "rst-sent",
    Hook.ICMP_SEND: "icmp-error-sent",
    Hook.SOCK_STATE: "tcp-state",
}


def hook_name(hook: Hook) -> str:
    return HOOK_NAMES.get(hook) or f"hook{int(hook)}"


class TextEnum(str, Enum):
    """An enum whose value is its name in the JSON contract. A str underneath, so
    that it is written as its name and hashes as cheaply as one (a flow counts by
    it per packet); compared by identity in the code, never with text."""

    __str__ = str.__str__
    __hash__ = str.__hash__

    def __format__(self, format_spec: str) -> str:
        return str.__format__(str(self), format_spec)


class Fate(TextEnum):
    """What became of a packet, from the most final (a later, weaker sighting
    never overrides a stronger one: Fate.rank)."""

    RESET = "reset"
    ICMP_ERROR = "icmp-error"
    REJECTED = "rejected"
    DROPPED = "dropped"
    ANSWERED = "answered"
    ANSWER_DROPPED = "answer-dropped"  # answered, and this host dropped the answer itself
    FORWARDED = "forwarded"
    DELIVERED = "delivered"
    SENT = "sent"
    UNANSWERED = "unanswered"
    NOT_FORWARDED = "not-forwarded"

    @property
    def rank(self) -> int:
        return FATE_RANK[self]


FATE_RANK = {Fate.RESET: 6, Fate.ICMP_ERROR: 6, Fate.REJECTED: 6, Fate.DROPPED: 5,
             Fate.ANSWERED: 4, Fate.ANSWER_DROPPED: 4, Fate.FORWARDED: 3, Fate.DELIVERED: 2,
             Fate.SENT: 1, Fate.UNANSWERED: 0, Fate.NOT_FORWARDED: 0}
# A request's fates that end it: an answer or a refusal.
FINAL_ANSWERS = frozenset({Fate.ANSWERED, Fate.REJECTED, Fate.RESET})


class Direction(TextEnum):
    """A packet's way through this host."""

    IN = "in"  # to one of its addresses
    OUT = "out"  # from one of them
    THROUGH = "through"  # neither: forwarded, or about to be


class NatKind(TextEnum):
    """What a NAT rewrite changed: the destination or the source."""

    DNAT = "dnat"
    SNAT = "snat"


class CsumVerdict(OpenIntEnum):
    """enum pf_csum in bpf/event.h, member for member (PF_CSUM_<name>): what an
    arriving TCP or UDP packet's checksum says, judged in the kernel."""

    NONE = 0
    GOOD = 1
    BAD = 2
    PSEUDO = 3
    UNCHECKED = 4

    @classmethod
    def _unknown_name(cls, value: int) -> str:
        return f"VERDICT{value}"


# Each verdict's name in events and JSON (the README's `checksum`).
CSUM_NAMES = {CsumVerdict.GOOD: "good", CsumVerdict.BAD: "bad",
              CsumVerdict.PSEUDO: "pseudo-header-only", CsumVerdict.UNCHECKED: "unchecked"}
# Every byte's verdict, by value: the decoder's per-packet table (no enum call).
VERDICTS: tuple[CsumVerdict | None, ...] = (None,) + tuple(
    CsumVerdict(value) for value in range(1, 256))


def verdict_name(verdict: CsumVerdict) -> str:
    return CSUM_NAMES.get(verdict) or f"verdict{int(verdict)}"


class Location(NamedTuple):
    """A place in the kernel's code: a function and the offset into it (None
    when the address could not be named: `function` is then the address)."""

    function: str
    offset: int | None = None


def location_text(location: Location) -> str:
    """'tcp_v4_rcv+0x1a', as kallsyms and the JSON write it."""
    if location.offset is None:
        return location.function
    return f"{location.function}+{location.offset:#x}"


class StateChange(NamedTuple):
    """A TCP socket's move from one state to another (sock:inet_sock_set_state)."""

    old: TcpState
    new: TcpState


def state_text(change: StateChange) -> str:
    return f"{change.old.name}>{change.new.name}"
