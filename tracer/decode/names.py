"""The JSON contract's names back to pktfate's types (model/), for the recording
reader: each table inverted from the one that writes it, so that the two cannot
disagree."""

from __future__ import annotations

from ..model.kinds import CSUM_NAMES, HOOK_NAMES, CsumVerdict, Hook, Location
from ..model.protocols import PROTO_NAMES, TCP_FLAG_LETTERS, Proto, TcpFlags, TcpState

_HOOKS = {text: hook for hook, text in HOOK_NAMES.items()}
_PROTOS = {text: proto for proto, text in PROTO_NAMES.items()}
_VERDICTS = {text: verdict for verdict, text in CSUM_NAMES.items()}
_FLAGS = {letter: bit for bit, letter in TCP_FLAG_LETTERS}


def _numbered(text: str, prefix: str) -> int:
    """N of 'prefixN', the name pktfate gives a value it has no name for."""
    if text.startswith(prefix) and text[len(prefix):].isdigit():
        return int(text[len(prefix):])
    raise ValueError(f"{text!r} is not a name pktfate writes")


def hook_of(text: str) -> Hook:
    hook = _HOOKS.get(text)
    return hook if hook is not None else Hook(_numbered(text, "hook"))


def proto_of(text: str) -> Proto:
    proto = _PROTOS.get(text)
    return proto if proto is not None else Proto(_numbered(text, ""))


def verdict_of(text: str) -> CsumVerdict:
    verdict = _VERDICTS.get(text)
    return verdict if verdict is not None else CsumVerdict(_numbered(text, "verdict"))


def flags_of(text: str) -> TcpFlags:
    """'SA' -> SYN|ACK; '.' (none) -> 0."""
    bits = 0
    for letter in text:
        bits |= _FLAGS.get(letter, 0)
    return TcpFlags(bits)


def location_of(text: str) -> Location:
    """'tcp_v4_rcv+0x1a' (kallsyms' way), or a bare address."""
    function, plus, offset = text.partition("+")
    if plus:
        try:
            return Location(function, int(offset, 16))
        except ValueError:
            pass
    return Location(text)


def state_of(text: str) -> TcpState:
    if text in TcpState.__members__:
        return TcpState[text]
    return TcpState(_numbered(text, ""))
