"""Which XDP modes pktfate tries on an interface (attach/hooks.py xdp_modes): no
root, no kernel."""

from __future__ import annotations

from pktfate.attach.hooks import xdp_modes
from pktfate.host.netlink import Interface


def _modes(kind: str, generic: bool) -> list[str]:
    iface = Interface(index=2, name="eth0", up=True, ethernet=True, xdp_prog_id=0, kind=kind)
    return [mode for mode, _flags in xdp_modes(iface, generic)]


def test_generic_xdp_only_where_wanted():
    # Beside tc ingress (generic False) a veth gets no XDP at all: generic would see
    # what tc sees at a copy per packet, and native changes the veth's receive path.
    assert _modes("veth", generic=False) == []
    assert _modes("veth", generic=True) == ["generic", "native"]
    # A NIC: native where its driver has it; generic only when wanted.
    assert _modes("", generic=False) == ["native"]
    assert _modes("", generic=True) == ["native", "generic"]
