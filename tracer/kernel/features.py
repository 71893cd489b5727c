"""Which forms of attachment this kernel offers, asked of the kernel, never told
by its version: the attach code takes a link where the kernel has that kind of
link and the older form elsewhere, and the tests expect what this says.

Each kind of link is a kernel object with a type of its own in the kernel's BTF
(struct bpf_xdp_link, tcx_link, bpf_perf_link): its presence there is the
feature. Where the kernel has no BTF, tcx and perf links are asked of the bpf()
syscall instead: a link to a device or perf event that does not exist fails with
ENODEV or EBADF where the kind of link exists, with EINVAL where it does not;
nothing is attached either way. XDP links cannot be told apart so (a missing
device is EINVAL too): without BTF they count as missing, and the attach code
tries one anyway and falls back to netlink when the kernel refuses it."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from functools import lru_cache

from . import bpfsys
from .btf import BTF, BTFError

_RETURN_ZERO = bytes.fromhex("b700000000000000" "9500000000000000")  # r0 = 0; exit
_NO_DEVICE = 0xFFFFFFFF  # an ifindex no device has
_NO_FILE = 0x7FFFFFFF  # an fd no process has


@dataclass(frozen=True)
class LinkForms:
    """True where the kernel has that kind of link."""

    xdp: bool  # XDP links (5.9), else XDP by netlink
    tcx: bool  # tcx links (6.6), else a clsact qdisc and its filters
    perf: bool  # tracepoints through perf links (5.15), else the perf event's ioctl

    def attach_names(self) -> dict[str, str]:
        """The start record's `attach` values these forms give (README, JSON)."""
        return {"xdp": "link" if self.xdp else "netlink",
                "tc": "tcx link" if self.tcx else "clsact",
                "tracepoints": "perf link" if self.perf else "perf event"}


def _by_syscall(prog_type: int, attach_type: int, target: int, exists: int) -> bool:
    prog = bpfsys.prog_load(prog_type, "pf_probe", _RETURN_ZERO)
    try:
        link = bpfsys.link_create(prog, target, attach_type)
    except bpfsys.BpfError as exc:
        return exc.errno == exists
    finally:
        os.close(prog)
    os.close(link)  # not expected: the target does not exist
    return True


@lru_cache(maxsize=1)
def link_forms() -> LinkForms:
    """This kernel's link forms (asked once per process; needs root, as bpf() does)."""
    try:
        btf = BTF.from_file()
    except BTFError:
        return LinkForms(
            xdp=False,
            tcx=_by_syscall(bpfsys.PROG_SCHED_CLS, bpfsys.ATTACH_TCX_INGRESS, _NO_DEVICE,
                            errno.ENODEV),
            perf=_by_syscall(bpfsys.PROG_TRACEPOINT, bpfsys.ATTACH_PERF_EVENT, _NO_FILE,
                             errno.EBADF))

    def has(struct_name: str) -> bool:
        try:
            btf.struct_id(struct_name)
        except BTFError:
            return False
        return True

    return LinkForms(xdp=has("bpf_xdp_link"), tcx=has("tcx_link"), perf=has("bpf_perf_link"))
