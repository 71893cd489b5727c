"""Read-only questions to the bpf() system call that bcc does not ask: which
programs a cgroup runs on its sockets' packets, and their names (through
kernel/bpfsys.py: bpftool is not on every host)."""

from __future__ import annotations

import ctypes
import os

from ..kernel import bpfsys

BPF_F_QUERY_EFFECTIVE = 1
# enum bpf_attach_type (uapi, stable): the cgroup hooks that can refuse a
# socket's packets or the socket itself.
CGROUP_ATTACH = {"ingress": 0, "egress": 1, "sock_create": 2}


class _Query(ctypes.Structure):
    _fields_ = [("target_fd", ctypes.c_uint32), ("attach_type", ctypes.c_uint32),
                ("query_flags", ctypes.c_uint32), ("attach_flags", ctypes.c_uint32),
                ("prog_ids", ctypes.c_uint64), ("prog_cnt", ctypes.c_uint32),
                ("_pad", ctypes.c_uint32)]


def program_name(prog_id: int) -> str:
    """The name a program was loaded with ('' when it cannot be read)."""
    try:
        fd = bpfsys.prog_fd_by_id(prog_id)
    except OSError:
        return ""
    try:
        return str(bpfsys.prog_info(fd)["name"])
    except OSError:
        return ""
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
            try:
                bpfsys.call(bpfsys.PROG_QUERY, query)
            except OSError:
                continue
            for prog_id in ids[:min(query.prog_cnt, 64)]:
                found.append({"attach": attach, "id": prog_id, "name": program_name(prog_id)})
    finally:
        os.close(fd)
    return found
