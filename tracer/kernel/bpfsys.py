"""The bpf() and perf_event_open() system calls, through ctypes: create maps, load
programs, make links, read program statistics. pktfate loads its programs itself
(from the object bcc compiled, see attach/objects.py) so that a start needs no
compiler and every attachment can be a link that dies with the process.

The attribute layouts are the kernel's uapi (include/uapi/linux/bpf.h and
perf_event.h), which only ever grows: fields are written at their fixed offsets
into a zeroed buffer, and the kernel is told the buffer's size."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import struct
from functools import cache
from pathlib import Path

# syscall numbers per machine: bpf, perf_event_open
_SYSCALLS = {"x86_64": (321, 298), "aarch64": (280, 241), "s390x": (351, 331),
             "ppc64le": (361, 319), "riscv64": (280, 241)}

# enum bpf_cmd
MAP_CREATE, MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_GET_NEXT_KEY = 0, 1, 2, 4
PROG_LOAD, PROG_GET_NEXT_ID, PROG_GET_FD_BY_ID, OBJ_GET_INFO_BY_FD = 5, 11, 13, 15
PROG_QUERY, RAW_TRACEPOINT_OPEN, LINK_CREATE, ENABLE_STATS = 16, 17, 28, 32
# enum bpf_prog_type
PROG_SCHED_CLS, PROG_TRACEPOINT, PROG_XDP, PROG_TRACING = 3, 5, 6, 26
# enum bpf_attach_type
ATTACH_TRACE_RAW_TP = 23
ATTACH_XDP, ATTACH_PERF_EVENT, ATTACH_TCX_INGRESS, ATTACH_TCX_EGRESS = 37, 41, 46, 47
BPF_PSEUDO_MAP_FD = 1
BPF_LD_IMM64 = 0x18
BPF_STATS_RUN_TIME = 0
OBJ_NAME_LEN = 16
# perf_event_open
PERF_TYPE_TRACEPOINT = 2
PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_SET_BPF = 0x40042408
_PERF_ATTR_SIZE = 64  # PERF_ATTR_SIZE_VER0: all a tracepoint needs

_LOG_SIZE = 1 << 20


class BpfError(OSError):
    """A bpf() or perf_event_open() call failed; `log` holds the verifier's words."""

    def __init__(self, err: int, what: str, log: str = ""):
        super().__init__(err, f"{what}: {os.strerror(err)}")
        self.log = log


@cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _numbers() -> tuple[int, int]:
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        raise BpfError(38, f"bpf() on {platform.machine()}")  # ENOSYS
    return numbers


def call(cmd: int, attr: ctypes.Array | ctypes.Structure, what: str = "bpf") -> int:
    """bpf(cmd, attr): the result, or BpfError with the errno."""
    ret = _libc().syscall(_numbers()[0], cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        raise BpfError(ctypes.get_errno(), what)
    return ret


def _attr(size: int, *fields: tuple[str, int, int]) -> ctypes.Array:
    """A zeroed attribute buffer with (format, offset, value) fields packed in."""
    buf = ctypes.create_string_buffer(size)
    for fmt, offset, value in fields:
        struct.pack_into(fmt, buf, offset, value)
    return buf


def _name(buf: ctypes.Array, offset: int, name: str) -> None:
    raw = name.encode()[:OBJ_NAME_LEN - 1]
    ctypes.memmove(ctypes.addressof(buf) + offset, raw, len(raw))


def map_create(map_type: int, name: str, key_size: int, value_size: int,
               max_entries: int, flags: int = 0) -> int:
    attr = _attr(72, ("I", 0, map_type), ("I", 4, key_size), ("I", 8, value_size),
                 ("I", 12, max_entries), ("I", 16, flags))
    _name(attr, 28, name)
    return call(MAP_CREATE, attr, f"creating map {name}")


def prog_load(prog_type: int, name: str, insns: bytes, license: str = "GPL",
              kern_version: int = 0, attach_type: int = 0, attach_btf_id: int = 0) -> int:
    """Load a program; on failure, load it again with the verifier's log to say why.
    A BTF-typed tracing program names its attach type and the BTF id of what it
    attaches to (a raw tracepoint's btf_trace_* typedef)."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())

    def attempt(log: ctypes.Array | None) -> int:
        attr = _attr(120, ("I", 0, prog_type), ("I", 4, len(insns) // 8),
                     ("Q", 8, ctypes.addressof(code)), ("Q", 16, ctypes.addressof(lic)),
                     ("I", 40, kern_version), ("I", 68, attach_type),
                     ("I", 108, attach_btf_id))
        if log is not None:
            struct.pack_into("IIQ", attr, 24, 1, len(log), ctypes.addressof(log))
        _name(attr, 48, name)
        return call(PROG_LOAD, attr, f"loading {name}")

    try:
        return attempt(None)
    except BpfError as exc:
        log = ctypes.create_string_buffer(_LOG_SIZE)
        try:
            return attempt(log)  # a transient failure (EAGAIN) may pass now
        except BpfError as again:
            text = log.value.decode(errors="replace")
            raise BpfError(again.errno or exc.errno or 22, f"loading {name}", text) from None


def _elem_attr(fd: int, key: ctypes.Array, value: ctypes.Array | None, flags: int = 0):
    return _attr(32, ("I", 0, fd), ("Q", 8, ctypes.addressof(key)),
                 ("Q", 16, ctypes.addressof(value) if value is not None else 0),
                 ("Q", 24, flags))


def map_lookup(fd: int, key: bytes, value_size: int) -> bytes | None:
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value_size)
    try:
        call(MAP_LOOKUP_ELEM, _elem_attr(fd, k, v))
    except BpfError as exc:
        if exc.errno == 2:  # ENOENT
            return None
        raise
    return v.raw


def map_update(fd: int, key: bytes, value: bytes) -> None:
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value, len(value))
    call(MAP_UPDATE_ELEM, _elem_attr(fd, k, v), "updating a map")


def map_next_key(fd: int, key: bytes | None, key_size: int) -> bytes | None:
    k = ctypes.create_string_buffer(key or bytes(key_size), key_size)
    nxt = ctypes.create_string_buffer(key_size)
    attr = _attr(32, ("I", 0, fd), ("Q", 8, ctypes.addressof(k) if key is not None else 0),
                 ("Q", 16, ctypes.addressof(nxt)))
    try:
        call(MAP_GET_NEXT_KEY, attr)
    except BpfError as exc:
        if exc.errno == 2:
            return None
        raise
    return nxt.raw


def link_create(prog_fd: int, target: int, attach_type: int, flags: int = 0) -> int:
    """A link: the attachment lives as long as this fd (and this process) does."""
    attr = _attr(32, ("I", 0, prog_fd), ("I", 4, target), ("I", 8, attach_type),
                 ("I", 12, flags))
    return call(LINK_CREATE, attr, "creating a link")


def raw_tracepoint_open(prog_fd: int) -> int:
    """Attach a BTF-typed raw tracepoint program where its BTF id says; the fd is
    a link: the program stays attached as long as it is open."""
    attr = _attr(16, ("Q", 0, 0), ("I", 8, prog_fd))
    return call(RAW_TRACEPOINT_OPEN, attr, "attaching a raw tracepoint")


def perf_tracepoint(tracepoint_id: int) -> int:
    """perf_event_open() on a tracepoint, every CPU; the fd to attach a program to."""
    attr = _attr(_PERF_ATTR_SIZE, ("I", 0, PERF_TYPE_TRACEPOINT), ("I", 4, _PERF_ATTR_SIZE),
                 ("Q", 8, tracepoint_id), ("Q", 16, 1), ("I", 48, 1))
    ret = _libc().syscall(_numbers()[1], ctypes.byref(attr), -1, 0, -1, PERF_FLAG_FD_CLOEXEC)
    if ret < 0:
        raise BpfError(ctypes.get_errno(), "perf_event_open on a tracepoint")
    return ret


def perf_set_bpf(perf_fd: int, prog_fd: int) -> None:
    """The pre-link way (kernels before 5.15): attach by ioctl, then enable."""
    libc = _libc()
    for request, arg in ((PERF_EVENT_IOC_SET_BPF, prog_fd), (PERF_EVENT_IOC_ENABLE, 0)):
        if libc.ioctl(perf_fd, request, arg) < 0:
            raise BpfError(ctypes.get_errno(), "attaching to a tracepoint")


def enable_stats() -> int:
    """BPF_ENABLE_STATS: programs count their run time while the fd stays open (the
    sysctl kernel.bpf_stats_enabled is never touched)."""
    return call(ENABLE_STATS, _attr(8, ("I", 0, BPF_STATS_RUN_TIME)), "enabling BPF statistics")


def prog_ids() -> list[int]:
    """Every loaded program's id."""
    ids: list[int] = []
    start = 0
    while True:
        attr = _attr(12, ("I", 0, start))
        try:
            call(PROG_GET_NEXT_ID, attr)
        except BpfError:
            return ids
        start = struct.unpack_from("I", attr, 4)[0]
        ids.append(start)


def prog_fd_by_id(prog_id: int) -> int:
    return call(PROG_GET_FD_BY_ID, _attr(12, ("I", 0, prog_id)), "opening a program")


def _obj_info(fd: int, size: int, what: str) -> ctypes.Array:
    """BPF_OBJ_GET_INFO_BY_FD: the first `size` bytes of the object's info struct."""
    buf = ctypes.create_string_buffer(size)
    call(OBJ_GET_INFO_BY_FD, _attr(16, ("I", 0, fd), ("I", 4, size),
                                   ("Q", 8, ctypes.addressof(buf))), what)
    return buf


# struct bpf_prog_info: the members read here, at their uapi offsets
_INFO_SIZE = 224
_INFO_ID, _INFO_NAME, _INFO_RUN_NS, _INFO_RUN_CNT = 4, 64, 192, 200


def prog_info(fd: int) -> dict:
    """A loaded program's id, name and statistics (run_time_ns, run_cnt; zero
    unless statistics are enabled)."""
    buf = _obj_info(fd, _INFO_SIZE, "reading a program's info")
    return {"id": struct.unpack_from("I", buf, _INFO_ID)[0],
            "name": buf.raw[_INFO_NAME:_INFO_NAME + OBJ_NAME_LEN].split(b"\0", 1)[0].decode(),
            "run_time_ns": struct.unpack_from("Q", buf, _INFO_RUN_NS)[0],
            "run_cnt": struct.unpack_from("Q", buf, _INFO_RUN_CNT)[0]}


def programs() -> list[dict]:
    """Every loaded program's info (those that can be opened)."""
    return [info for info in map(info_by_id, prog_ids()) if info is not None]


def held_by(pid: int) -> dict[str, set[int]]:
    """The BPF programs, links and maps a process holds open, by id (from its
    fds' fdinfo): what it has loaded and attached."""
    held: dict[str, set[int]] = {"programs": set(), "links": set(), "maps": set()}
    try:
        entries = list(Path(f"/proc/{pid}/fdinfo").iterdir())
    except OSError:
        return held
    for entry in entries:
        try:
            text = entry.read_text()
        except OSError:
            continue  # closed meanwhile
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if "link_id" in fields:
            held["links"].add(int(fields["link_id"]))
        elif "prog_id" in fields:
            held["programs"].add(int(fields["prog_id"]))
        elif "map_id" in fields:
            held["maps"].add(int(fields["map_id"]))
    return held


def info_by_id(prog_id: int) -> dict | None:
    try:
        fd = prog_fd_by_id(prog_id)
    except BpfError:
        return None
    try:
        return prog_info(fd)
    finally:
        os.close(fd)


@cache
def possible_cpus() -> int:
    """How many per-CPU slots a per-CPU map value has."""
    try:
        text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    except OSError:
        return os.cpu_count() or 1
    count = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count
