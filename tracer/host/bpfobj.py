"""Read-only questions to the bpf() system call that bcc does not ask: which
programs a cgroup runs on its sockets' packets, and their names. Through ctypes:
bcc brings no wrapper for them, and bpftool is not on every host."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

_SYS_BPF = {"x86_64": 321, "aarch64": 280, "s390x": 351, "ppc64le": 361, "riscv64": 280}
BPF_PROG_QUERY, BPF_PROG_GET_FD_BY_ID, BPF_OBJ_GET_INFO_BY_FD = 16, 13, 15
BPF_F_QUERY_EFFECTIVE = 1
# enum bpf_attach_type (uapi, stable): the cgroup hooks that can refuse a
# socket's packets or the socket itself.
CGROUP_ATTACH = {"ingress": 0, "egress": 1, "sock_create": 2}
_INFO_SIZE = 256  # struct bpf_prog_info is larger; the kernel fills what fits
_INFO_NAME = slice(64, 80)  # char name[BPF_OBJ_NAME_LEN], after the fixed members before it


class _Query(ctypes.Structure):
    _fields_ = [("target_fd", ctypes.c_uint32), ("attach_type", ctypes.c_uint32),
                ("query_flags", ctypes.c_uint32), ("attach_flags", ctypes.c_uint32),
                ("prog_ids", ctypes.c_uint64), ("prog_cnt", ctypes.c_uint32),
                ("_pad", ctypes.c_uint32)]


class _GetFd(ctypes.Structure):
    _fields_ = [("prog_id", ctypes.c_uint32), ("next_id", ctypes.c_uint32),
                ("open_flags", ctypes.c_uint32)]


class _Info(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32),
                ("info", ctypes.c_uint64)]


def _bpf(cmd: int, attr: ctypes.Structure) -> int:
    number = _SYS_BPF.get(platform.machine())
    if number is None:
        return -1
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    return libc.syscall(number, cmd, ctypes.byref(attr), ctypes.sizeof(attr))


def program_name(prog_id: int) -> str:
    """The name a program was loaded with ('' when it cannot be read)."""
    fd = _bpf(BPF_PROG_GET_FD_BY_ID, _GetFd(prog_id=prog_id))
    if fd < 0:
        return ""
    try:
        buf = ctypes.create_string_buffer(_INFO_SIZE)
        attr = _Info(bpf_fd=fd, info_len=_INFO_SIZE, info=ctypes.addressof(buf))
        if _bpf(BPF_OBJ_GET_INFO_BY_FD, attr) < 0:
            return ""
        return buf.raw[_INFO_NAME].split(b"\0", 1)[0].decode(errors="replace")
    finally:
        os.close(fd)


def cgroup_programs(cgroup_dir: str) -> list[dict]:
    """The programs in effect on a cgroup (its own and its parents'), per hook:
    [{'attach': 'ingress', 'id': 42, 'name': 'sd_fw_ingress'}]."""
    try:
        fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return []
    found = []
    try:
        for attach, number in CGROUP_ATTACH.items():
            ids = (ctypes.c_uint32 * 64)()
            query = _Query(target_fd=fd, attach_type=number, query_flags=BPF_F_QUERY_EFFECTIVE,
                           prog_ids=ctypes.addressof(ids), prog_cnt=64)
            if _bpf(BPF_PROG_QUERY, query) < 0:
                continue
            for prog_id in ids[:min(query.prog_cnt, 64)]:
                found.append({"attach": attach, "id": prog_id, "name": program_name(prog_id)})
    finally:
        os.close(fd)
    return found
