"""The protocols' own numbers, defined once: IP protocol numbers, TCP flags, ICMP
and ICMPv6 types and codes (each family apart: the same number means different
things in the two), TCP states."""

from __future__ import annotations

from enum import IntEnum, IntFlag
from typing import NamedTuple


class OpenIntEnum(IntEnum):
    """An IntEnum that keeps a byte's value it has no member for (a newer kernel's
    state, hook or verdict, a protocol the kernel side does not send today) as a
    member of its own, named by _unknown_name: the event still decodes, and says
    the number."""

    @classmethod
    def _missing_(cls, value: object) -> OpenIntEnum | None:
        if not isinstance(value, int) or not 0 <= value <= 255:
            return None
        member = int.__new__(cls, value)
        member._name_ = cls._unknown_name(value)
        member._value_ = value
        return member

    @classmethod
    def _unknown_name(cls, value: int) -> str:
        return str(value)


class Proto(OpenIntEnum):
    """IP protocol numbers (the event's `proto`); the JSON names them."""

    ICMP = 1
    TCP = 6
    UDP = 17
    ICMPV6 = 58

    @classmethod
    def _unknown_name(cls, value: int) -> str:
        return f"PROTO_{value}"

    @property
    def is_icmp(self) -> bool:
        return self in (Proto.ICMP, Proto.ICMPV6)

    @property
    def has_ports(self) -> bool:
        return self in (Proto.TCP, Proto.UDP)


# Each protocol's name in the JSON contract (events, flows, kernel counts).
PROTO_NAMES = {Proto.ICMP: "icmp", Proto.TCP: "tcp", Proto.UDP: "udp", Proto.ICMPV6: "icmpv6"}


def proto_name(proto: Proto) -> str:
    return PROTO_NAMES.get(proto) or str(int(proto))


class TcpFlags(IntFlag):
    """The TCP header's flag bits that pktfate records."""

    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20


# The flags' letters in the order tcpdump writes them, for the JSON and output.
TCP_FLAG_LETTERS = ((TcpFlags.SYN, "S"), (TcpFlags.FIN, "F"), (TcpFlags.RST, "R"),
                    (TcpFlags.PSH, "P"), (TcpFlags.ACK, "A"), (TcpFlags.URG, "U"))
SYN_ACK = TcpFlags.SYN | TcpFlags.ACK


def flags_text(flags: int) -> str:
    """'SA' for SYN and ACK, '.' for none."""
    return "".join(letter for bit, letter in TCP_FLAG_LETTERS if flags & bit) or "."


class Icmp4(IntEnum):
    """ICMP (IPv4) types."""

    ECHO_REPLY = 0
    DEST_UNREACH = 3
    SOURCE_QUENCH = 4
    REDIRECT = 5
    ECHO_REQUEST = 8
    TIME_EXCEEDED = 11
    PARAMETER_PROBLEM = 12


class Icmp6(IntEnum):
    """ICMPv6 types."""

    DEST_UNREACH = 1
    PACKET_TOO_BIG = 2
    TIME_EXCEEDED = 3
    PARAMETER_PROBLEM = 4
    ECHO_REQUEST = 128
    ECHO_REPLY = 129


class IcmpCode(NamedTuple):
    """An ICMP message's type and code, of one family."""

    type: int
    code: int

    def __str__(self) -> str:
        return f"{self.type}/{self.code}"


class IcmpFamily(NamedTuple):
    """What pktfate needs of one ICMP family: its protocol, echo types, the types
    that are errors (they quote the packet they answer), and the names of its
    types and of its unreachable codes."""

    proto: Proto
    echo_request: int
    echo_reply: int
    unreachable: int
    time_exceeded: int
    errors: frozenset[int]
    type_names: dict[int, str]
    unreachable_codes: dict[int, str]

    def type_name(self, icmp_type: int | None) -> str:
        """'echo request', 'time exceeded'... or 'type N'."""
        return self.type_names.get(icmp_type or 0, f"type {icmp_type}")

    def error_name(self, code: IcmpCode) -> str | None:
        """'port unreachable', 'time exceeded'...; None for one without a name."""
        if code.type == self.unreachable:
            return self.unreachable_codes.get(code.code)
        if code.type in self.errors and code.type != self.unreachable:
            return self.type_names.get(code.type)
        return None


ICMP4 = IcmpFamily(
    Proto.ICMP, Icmp4.ECHO_REQUEST, Icmp4.ECHO_REPLY, Icmp4.DEST_UNREACH, Icmp4.TIME_EXCEEDED,
    frozenset({Icmp4.DEST_UNREACH, Icmp4.SOURCE_QUENCH, Icmp4.REDIRECT, Icmp4.TIME_EXCEEDED,
               Icmp4.PARAMETER_PROBLEM}),
    {Icmp4.ECHO_REPLY: "echo reply", Icmp4.DEST_UNREACH: "unreachable",
     Icmp4.SOURCE_QUENCH: "source quench", Icmp4.REDIRECT: "redirect",
     Icmp4.ECHO_REQUEST: "echo request", Icmp4.TIME_EXCEEDED: "time exceeded",
     Icmp4.PARAMETER_PROBLEM: "parameter problem"},
    {0: "net unreachable", 1: "host unreachable", 2: "protocol unreachable",
     3: "port unreachable", 4: "fragmentation needed", 9: "net prohibited",
     10: "host prohibited", 13: "administratively prohibited"})
ICMP6 = IcmpFamily(
    Proto.ICMPV6, Icmp6.ECHO_REQUEST, Icmp6.ECHO_REPLY, Icmp6.DEST_UNREACH,
    Icmp6.TIME_EXCEEDED,
    frozenset({Icmp6.DEST_UNREACH, Icmp6.PACKET_TOO_BIG, Icmp6.TIME_EXCEEDED,
               Icmp6.PARAMETER_PROBLEM}),
    {Icmp6.DEST_UNREACH: "unreachable", Icmp6.PACKET_TOO_BIG: "packet too big",
     Icmp6.TIME_EXCEEDED: "time exceeded", Icmp6.PARAMETER_PROBLEM: "parameter problem",
     Icmp6.ECHO_REQUEST: "echo request", Icmp6.ECHO_REPLY: "echo reply"},
    {0: "no route", 1: "administratively prohibited", 2: "beyond the source's scope",
     3: "address unreachable", 4: "port unreachable", 5: "source address failed policy",
     6: "reject route"})
ICMP_FAMILIES = {Proto.ICMP: ICMP4, Proto.ICMPV6: ICMP6}
ICMP_BY_FAMILY = {4: ICMP4, 6: ICMP6}  # by IP version

# The errors the rules speak of, by family.
PORT_UNREACHABLE = {Proto.ICMP: IcmpCode(3, 3), Proto.ICMPV6: IcmpCode(1, 4)}
HOST_UNREACHABLE = {Proto.ICMP: IcmpCode(3, 1), Proto.ICMPV6: IcmpCode(1, 3)}
TIME_EXCEEDED = {Proto.ICMP: IcmpCode(11, 0), Proto.ICMPV6: IcmpCode(3, 0)}
TOO_BIG = {Proto.ICMP: IcmpCode(3, 4), Proto.ICMPV6: IcmpCode(2, 0)}


def is_icmp_error(proto: Proto, icmp_type: int | None) -> bool:
    family = ICMP_FAMILIES.get(proto)
    return family is not None and icmp_type in family.errors


class TcpState(OpenIntEnum):
    """include/net/tcp_states.h: the numbers are part of the tracepoint's ABI."""

    ESTABLISHED = 1
    SYN_SENT = 2
    SYN_RECV = 3
    FIN_WAIT1 = 4
    FIN_WAIT2 = 5
    TIME_WAIT = 6
    CLOSE = 7
    CLOSE_WAIT = 8
    LAST_ACK = 9
    LISTEN = 10
    CLOSING = 11
    NEW_SYN_RECV = 12
