"""Attach and detach XDP programs and tc filters over netlink, recording each one
in the state file before it is made. Only pktfate's own are ever removed."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import PktfateError
from ..host.netlink import Interface, interface_of
from ..kernel import bpfsys
from ..kernel.features import link_forms

if TYPE_CHECKING:
    from .state import StateFile

TC_INGRESS_PARENT = 0xFFFFFFF2
TC_EGRESS_PARENT = 0xFFFFFFF3
TC_FILTER_PREFIX = "pktfate-"
XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0  # never replace another tool's program
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2


@dataclass
class AttachReport:
    """What got attached where, and what could not be, for the start banner."""

    xdp: dict[str, str] = field(default_factory=dict)  # iface -> mode
    # Interfaces where XDP would have been generic, left to tc ingress (xdp_modes)
    xdp_left_out: list[str] = field(default_factory=list)
    tc: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    # How each kind of hook is held: "link" (ends with the process) or the
    # fallback ("netlink" for XDP, "clsact" for tc, "perf event" for tracepoints).
    attach: dict[str, str] = field(default_factory=dict)
    bpf_object: str = ""  # "compiled" or "cached"

    def held_by_process(self) -> list[str]:
        """One sentence per kind of hook that outlives a killed process."""
        notes = []
        if self.attach.get("xdp") == "netlink":
            notes.append("XDP attached through netlink, not a link (kernel before 5.9): "
                         "after a kill -9, run pktfate cleanup")
        if self.attach.get("tc") == "clsact":
            notes.append("tc attached as clsact filters, not tcx links (kernel before 6.6): "
                         "after a kill -9, run pktfate cleanup")
        return notes


# Native XDP on a veth switches the device to a NAPI receive path of its own,
# which costs packet rate whatever the program does (measured in bench/): an
# observer takes the generic hook there. Elsewhere, native where the driver has it.
GENERIC_FIRST_KINDS = ("veth",)


def xdp_modes(iface: Interface, generic: bool) -> list[tuple[str, int]]:
    """The XDP modes to try on an interface, in order. Generic XDP only where
    `generic` (no tc ingress there, or --xdp-generic): it runs on the skb, after
    GRO, just before tc ingress, so it sees what tc ingress sees, and it makes the
    kernel give every skb XDP's headroom first (a copy per packet on a veth). On a
    veth native XDP is not tried without generic (see GENERIC_FIRST_KINDS)."""
    native, skb = ("native", XDP_FLAGS_DRV_MODE), ("generic", XDP_FLAGS_SKB_MODE)
    if iface.kind in GENERIC_FIRST_KINDS:
        return [skb, native] if generic else []
    return [native, skb] if generic else [native]


class XdpLeftOut(PktfateError):
    """Only generic XDP was possible on the interface, and it was not wanted."""


def _generic_left_out(iface: Interface) -> XdpLeftOut:
    return XdpLeftOut(iface.name)


def _xdp_attach(ipr, iface: Interface, fd: int, modes: list[tuple[str, int]]) -> str:
    """Attach in the first of `modes` the interface takes. Returns the mode.
    UPDATE_IF_NOEXIST: an interface that already runs an XDP program keeps it,
    and pktfate does without XDP there."""
    last_error: Exception | None = None
    for mode, flag in modes:
        try:
            ipr.link(
                "set",
                index=iface.index,
                xdp={"attrs": [("IFLA_XDP_FD", fd),
                               ("IFLA_XDP_FLAGS", flag | XDP_FLAGS_UPDATE_IF_NOEXIST)]},
            )
            return mode
        except Exception as exc:  # NetlinkError, but pyroute2 has several kinds
            last_error = exc
            if getattr(exc, "code", None) == errno.EBUSY:
                break
    if "generic" not in dict(modes):
        raise _generic_left_out(iface) from last_error
    raise PktfateError(f"XDP refused on {iface.name}: {last_error}")


def _xdp_prog_id(ipr, index: int) -> int:
    links = ipr.get_links(index)
    return interface_of(links[0]).xdp_prog_id if links else 0


def xdp_detach(ipr, index: int, mode: str) -> None:
    flag = XDP_FLAGS_DRV_MODE if mode == "native" else XDP_FLAGS_SKB_MODE
    ipr.link("set", index=index,
             xdp={"attrs": [("IFLA_XDP_FD", -1), ("IFLA_XDP_FLAGS", flag)]})


# Errors that say the kernel has no such link (an attach type it does not know),
# as opposed to this interface refusing the program.
_NO_LINK_ERRNOS = (errno.EINVAL, errno.ENOTSUPP if hasattr(errno, "ENOTSUPP") else 524)


def _xdp_link(iface: Interface, fd: int, modes: list[tuple[str, int]]
              ) -> tuple[int, str] | None:
    """An XDP link in the first of `modes` the interface takes: (link fd, mode);
    None when the kernel has no XDP links."""
    if not link_forms().xdp:
        return None
    last: bpfsys.BpfError | None = None
    for mode, flag in modes:
        try:
            return bpfsys.link_create(fd, iface.index, bpfsys.ATTACH_XDP, flag), mode
        except bpfsys.BpfError as exc:
            last = exc
            if exc.errno == errno.EBUSY:  # another program holds the hook
                raise PktfateError(f"XDP refused on {iface.name}: {exc}") from exc
    if last is not None and last.errno in _NO_LINK_ERRNOS:
        return None
    if "generic" not in dict(modes):
        raise _generic_left_out(iface) from last
    raise PktfateError(f"XDP refused on {iface.name}: {last}")


@contextmanager
def _by_link(report: AttachReport, kind: str, linked: str, fallback: str,
             make: Callable[[], list[int] | None]) -> Iterator[bool]:
    """Hold a hook through the links make() creates, closed (so detached) on the way
    out. Yields True when the hook is dealt with: linked, or refused (said in
    report.skipped); False when the caller attaches the old way, because the kernel
    has no such link (then every later interface goes that way too)."""
    if report.attach.get(kind) == fallback:
        yield False
        return
    try:
        fds = make()
    except XdpLeftOut as exc:
        report.xdp_left_out.append(str(exc))
        yield True
        return
    except PktfateError as exc:
        report.skipped.append(str(exc))
        yield True
        return
    if fds is None:
        report.attach[kind] = fallback
        yield False
        return
    report.attach[kind] = linked
    try:
        yield True
    finally:
        for link_fd in fds:
            os.close(link_fd)  # the link was the hook's only holder


@contextmanager
def xdp_attached(ipr, iface: Interface, fd: int, state: StateFile,
                  report: AttachReport, generic: bool = True) -> Iterator[None]:
    """XDP on one interface, in a mode of xdp_modes(iface, generic)."""
    if iface.xdp_prog_id:
        report.skipped.append(f"XDP on {iface.name}: another XDP program is attached there")
        yield
        return
    modes = xdp_modes(iface, generic)
    if not modes:
        report.xdp_left_out.append(iface.name)
        yield
        return

    def link() -> list[int] | None:
        made = _xdp_link(iface, fd, modes)
        if made is None:
            return None
        report.xdp[iface.name] = made[1]
        return [made[0]]

    with _by_link(report, "xdp", "link", "netlink", link) as held:
        if held:
            yield
            return
    entry = {"index": iface.index, "name": iface.name, "mode": "pending", "prog_id": 0}
    state.add("xdp", entry)
    try:
        entry_mode = _xdp_attach(ipr, iface, fd, modes)
    except PktfateError as exc:
        state.drop("xdp", entry)
        if isinstance(exc, XdpLeftOut):
            report.xdp_left_out.append(iface.name)
        else:
            report.skipped.append(str(exc))
        yield
        return
    attached = dict(entry, mode=entry_mode, prog_id=_xdp_prog_id(ipr, iface.index))
    state.drop("xdp", entry)
    state.add("xdp", attached)
    report.xdp[iface.name] = entry_mode
    try:
        yield
    finally:
        if _xdp_prog_id(ipr, iface.index) == attached["prog_id"]:
            xdp_detach(ipr, iface.index, entry_mode)
        state.drop("xdp", attached)


def _has_clsact(ipr, index: int) -> bool:
    return any(q.get_attr("TCA_KIND") == "clsact" for q in ipr.get_qdiscs(index=index))


def _filter_name(direction: str) -> str:
    return f"{TC_FILTER_PREFIX}{os.getpid()}-{direction}"


def our_filters(ipr, index: int, parent: int, name: str | None = None) -> list:
    found = []
    for flt in ipr.get_filters(index=index, parent=parent):
        opts = flt.get_attr("TCA_OPTIONS")
        fname = opts.get_attr("TCA_BPF_NAME") if opts else None
        if fname and fname.startswith(TC_FILTER_PREFIX) and (name is None or fname == name):
            found.append(flt)
    return found


def delete_filter(ipr, index: int, parent: int, flt) -> None:
    prio = flt["info"] >> 16
    ipr.tc("del-filter", "bpf", index, flt["handle"], parent=parent, prio=prio)


def _tcx_links(iface: Interface, fds: dict[str, int]) -> list[int] | None:
    """tcx links for both directions, appended after the programs already there;
    None when the kernel has no tcx (before 6.6)."""
    if not link_forms().tcx:
        return None
    links: list[int] = []
    try:
        for direction, fd in fds.items():
            kind = bpfsys.ATTACH_TCX_INGRESS if direction == "in" else bpfsys.ATTACH_TCX_EGRESS
            links.append(bpfsys.link_create(fd, iface.index, kind))
    except bpfsys.BpfError as exc:
        for link in links:
            os.close(link)
        if exc.errno in _NO_LINK_ERRNOS:
            return None
        raise PktfateError(f"tc on {iface.name}: {exc}") from exc
    return links


@contextmanager
def tc_attached(ipr, iface: Interface, fds: dict[str, int], state: StateFile,
                 report: AttachReport) -> Iterator[None]:
    def links() -> list[int] | None:
        made = _tcx_links(iface, fds)
        if made is not None:
            report.tc.append(iface.name)
        return made

    with _by_link(report, "tc", "tcx link", "clsact", links) as held:
        if held:
            yield
            return
    created = not _has_clsact(ipr, iface.index)
    entry = {"index": iface.index, "name": iface.name, "created_clsact": created,
             "filters": [_filter_name(d) for d in fds]}
    state.add("tc", entry)
    try:
        if created:
            ipr.tc("add", "clsact", iface.index)
        for direction, fd in fds.items():
            parent = TC_INGRESS_PARENT if direction == "in" else TC_EGRESS_PARENT
            ipr.tc("add-filter", "bpf", iface.index, ":1", fd=fd, name=_filter_name(direction),
                   parent=parent, classid=1, direct_action=True)
    except Exception as exc:
        tc_remove(ipr, entry)
        state.drop("tc", entry)
        report.skipped.append(f"tc on {iface.name}: {exc}")
        yield
        return
    report.tc.append(iface.name)
    try:
        yield
    finally:
        tc_remove(ipr, entry)
        state.drop("tc", entry)


def tc_remove(ipr, entry: dict) -> None:
    """Remove the named filters, and the clsact qdisc if pktfate created it and
    nothing else uses it."""
    index = entry["index"]
    if not ipr.get_links(index):
        return
    for parent in (TC_INGRESS_PARENT, TC_EGRESS_PARENT):
        for name in entry["filters"]:
            for flt in our_filters(ipr, index, parent, name):
                delete_filter(ipr, index, parent, flt)
    if entry.get("created_clsact") and _has_clsact(ipr, index):
        in_use = any(ipr.get_filters(index=index, parent=p)
                     for p in (TC_INGRESS_PARENT, TC_EGRESS_PARENT))
        if not in_use:
            ipr.tc("del", "clsact", index)


