"""The compiled BPF object: what bcc's compiler made of bpf/ for one set of
defines on one kernel (each program's instructions, the maps they use), kept in a
cache so that the next start loads it without compiling.

bcc compiles and then creates its maps, writing their fds into the instructions
(ld_imm64 with src_reg BPF_PSEUDO_MAP_FD). The object keeps, for each such
instruction, the name of the map it refers to; loading creates the maps again and
writes the new fds there (attach/loader.py). The cache key covers everything the
instructions depend on: the C text, the defines (struct offsets from BTF and the
tracepoints' formats included), the kernel's build and bcc's version.

Why pktfate reads bcc's compiled module itself (libbcc's bpf_table_* and
bpf_function_* calls, which bcc's Python API does not expose as a stable
interface) and patches instructions, rather than let bcc load and attach:
- Links. bcc 0.26 attaches XDP by netlink and tc by clsact filters and has no
  tcx, XDP or raw-tracepoint links; only a link goes away with the process that
  holds it, so that `kill -9` leaves nothing attached (test_lifecycle). Loading
  the programs ourselves (attach/loader.py) is what makes the links possible.
- The compile cache. Compiling the BPF C with bcc's clang takes most of a start:
  measured here, `watch --duration 0.2` from exec to exit takes 3.1-3.3 s with
  PKTFATE_BPF_CACHE=off and 1.0-1.1 s from the cache. bcc cannot load a program
  it did not compile in the same process, so the cache needs our own loader.
A libbcc that lacks one of the calls read here (a newer bcc renaming them) or
writes map references another way ends in one PktfateError naming bcc's version
(bcc_interface_error), never in an AttributeError deep in a start.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import importlib.util
import json
import os
import platform
import re
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import PktfateError
from ..kernel import bpfsys

OBJECT_FORMAT = 1
DEFAULT_CACHE = Path("/var/cache/pktfate/bpf")
TRACEPOINT_PREFIX = "tracepoint__"
# The programs the attach layer loads by name, and their types.
FRAME_PROGRAMS = {"pf_xdp": bpfsys.PROG_XDP, "pf_tc_ingress": bpfsys.PROG_SCHED_CLS,
                  "pf_tc_egress": bpfsys.PROG_SCHED_CLS}
# BTF-typed raw tracepoint programs, each the twin of a bcc tracepoint program:
# the loader attaches one of the two (loader.py).
RAW_PROGRAMS = {"pf_kfree_skb_raw": "skb/kfree_skb", "pf_consume_skb_raw": "skb/consume_skb",
                "pf_icmp_send_raw": "icmp/icmp_send", "pf_tcp_bad_csum_raw": "tcp/tcp_bad_csum",
                "pf_agent_kfree_raw": "skb/kfree_skb"}


@dataclass(frozen=True)
class MapSpec:
    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int


@dataclass(frozen=True)
class ProgramSpec:
    name: str  # the C function's name
    type: int
    insns: bytes
    map_refs: tuple[tuple[int, str], ...]  # (instruction index, map name)

    @property
    def tracepoint(self) -> str | None:
        """'skb/kfree_skb' for bcc's TRACEPOINT_PROBE(skb, kfree_skb)."""
        if not self.name.startswith(TRACEPOINT_PREFIX):
            return None
        return self.name[len(TRACEPOINT_PREFIX):].replace("__", "/", 1)

    @property
    def raw_tracepoint(self) -> str | None:
        """'skb/kfree_skb' for its BTF-typed raw twin, pf_kfree_skb_raw."""
        return RAW_PROGRAMS.get(self.name)

    @property
    def kernel_name(self) -> str:
        """The name the kernel shows (bpftool, the bench), 15 characters at most:
        bcc's tracepoint names would all cut to 'tracepoint__skb' and the like.
        Both forms of a hook show as the same name: one of them is loaded."""
        tracepoint = self.tracepoint or self.raw_tracepoint
        name = f"pf_{tracepoint.split('/', 1)[1]}" if tracepoint else self.name
        return name[:bpfsys.OBJ_NAME_LEN - 1]  # the length counts the NUL


@dataclass(frozen=True)
class CompiledObject:
    license: str
    kern_version: int
    maps: tuple[MapSpec, ...]
    programs: tuple[ProgramSpec, ...]

    def to_json(self) -> str:
        data = asdict(self)
        for prog in data["programs"]:
            prog["insns"] = base64.b64encode(prog["insns"]).decode()
        return json.dumps({"format": OBJECT_FORMAT, **data})

    @classmethod
    def from_json(cls, text: str) -> CompiledObject:
        data = json.loads(text)
        if data.get("format") != OBJECT_FORMAT:
            raise ValueError("another format")
        maps = tuple(MapSpec(**m) for m in data["maps"])
        programs = tuple(
            ProgramSpec(p["name"], p["type"], base64.b64decode(p["insns"]),
                        tuple((int(i), str(n)) for i, n in p["map_refs"]))
            for p in data["programs"])
        return cls(data["license"], data["kern_version"], maps, programs)


def map_references(insns: bytes, fd_names: dict[int, str]) -> tuple[tuple[int, str], ...]:
    """Where the instructions load a map's fd: (index, map name). An fd that is no
    map of the object means the instructions cannot be reused: ValueError."""
    refs = []
    for index in range(0, len(insns) // 8):
        code, regs, _off, imm = struct.unpack_from("<BBhi", insns, index * 8)
        if code == bpfsys.BPF_LD_IMM64 and (regs >> 4) == bpfsys.BPF_PSEUDO_MAP_FD:
            if imm not in fd_names:
                raise ValueError(f"instruction {index} loads fd {imm}, no map of the object")
            refs.append((index, fd_names[imm]))
    return tuple(refs)


def with_map_fds(prog: ProgramSpec, fds: dict[str, int]) -> bytes:
    """The program's instructions with each map reference set to the map's new fd."""
    code = bytearray(prog.insns)
    for index, name in prog.map_refs:
        if not 0 <= index < len(code) // 8:
            raise ValueError(f"{prog.name}: map reference past the end of the code")
        struct.pack_into("<i", code, index * 8 + 4, fds[name])
    return bytes(code)


BPF_CALL, BPF_PSEUDO_KFUNC_CALL = 0x85, 2


def with_kfuncs(code: bytes, btf_ids: dict[int, int]) -> bytes:
    """The instructions with each call to a kfunc mark (KFUNC_MARKS) turned into
    a call of that kernel function: src_reg BPF_PSEUDO_KFUNC_CALL, imm its BTF id,
    off 0 (the kernel's own BTF). A mark without an id stays: the kernel then
    refuses the program, and the loader falls back to its regular twin."""
    out = bytearray(code)
    for pos in range(0, len(out) - 7, 8):
        imm = struct.unpack_from("<i", out, pos + 4)[0]
        if out[pos] == BPF_CALL and out[pos + 1] >> 4 == 0 and imm in btf_ids:
            out[pos + 1] = (BPF_PSEUDO_KFUNC_CALL << 4) | (out[pos + 1] & 0x0F)
            struct.pack_into("<hi", out, pos + 2, 0, btf_ids[imm])
    return bytes(out)


def program_type(name: str) -> int:
    if name in RAW_PROGRAMS:
        return bpfsys.PROG_TRACING
    return bpfsys.PROG_TRACEPOINT if name.startswith(TRACEPOINT_PREFIX) else FRAME_PROGRAMS[name]


def compile_object(bcc, text: str, cflags: list[str]) -> CompiledObject:
    """Compile with bcc and take the object out of it; bcc's own copy is then
    closed (its maps and programs go with it)."""
    from bcc.libbcc import lib

    missing = [name for name in LIBBCC_CALLS if not hasattr(lib, name)]
    if missing:
        raise bcc_interface_error(f"its libbcc has no {', '.join(missing)}")
    lib.bpf_table_name.restype = ctypes.c_char_p
    lib.bpf_function_name.restype = ctypes.c_char_p
    bpf = bcc.BPF(text=text, cflags=cflags)
    try:
        module = bpf.module
        maps, fd_names = [], {}
        for i in range(lib.bpf_num_tables(module)):
            name = lib.bpf_table_name(module, i).decode()
            fd_names[lib.bpf_table_fd_id(module, i)] = name
            maps.append(MapSpec(name, lib.bpf_table_type_id(module, i),
                                lib.bpf_table_key_size_id(module, i),
                                lib.bpf_table_leaf_size_id(module, i),
                                lib.bpf_table_max_entries_id(module, i),
                                lib.bpf_table_flags_id(module, i)))
        programs = []
        for i in range(lib.bpf_num_functions(module)):
            name = lib.bpf_function_name(module, i).decode()
            start = lib.bpf_function_start(module, name.encode())
            insns = ctypes.string_at(start, lib.bpf_function_size(module, name.encode()))
            try:
                refs = map_references(insns, fd_names)
            except ValueError as exc:
                raise bcc_interface_error(f"{name}'s map references are not bcc's usual "
                                          f"map fds ({exc})") from exc
            programs.append(ProgramSpec(name, program_type(name), insns, refs))
        return CompiledObject(lib.bpf_module_license(module).decode(),
                              lib.bpf_module_kern_version(module),
                              tuple(maps), tuple(programs))
    finally:
        bpf.cleanup()


# The calls of bcc's compiled-module interface (libbcc) read by compile_object.
LIBBCC_CALLS = ("bpf_num_tables", "bpf_table_name", "bpf_table_fd_id", "bpf_table_type_id",
                "bpf_table_key_size_id", "bpf_table_leaf_size_id", "bpf_table_max_entries_id",
                "bpf_table_flags_id", "bpf_num_functions", "bpf_function_name",
                "bpf_function_start", "bpf_function_size", "bpf_module_license",
                "bpf_module_kern_version")


def bcc_interface_error(what: str) -> PktfateError:
    """The one-line error for a bcc whose internals pktfate reads have changed."""
    return PktfateError(f"bcc {bcc_version()} is not what pktfate knows: {what}; pktfate reads "
                        "bcc's compiled object through libbcc (tested with the distro's "
                        "0.26): install that bcc, or report the version")


def bcc_version() -> str:
    """bcc's version, read without importing bcc (which loads its compiler)."""
    spec = importlib.util.find_spec("bcc")
    if spec is None or not spec.submodule_search_locations:
        return "?"
    for folder in spec.submodule_search_locations:
        try:
            text = (Path(folder) / "version.py").read_text()
        except OSError:
            continue
        found = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", text)
        if found:
            return found.group(1)
    return "?"


def cache_key(text: str, cflags: list[str], bcc_version: str) -> str:
    uname = platform.uname()
    digest = hashlib.sha256()
    for part in (str(OBJECT_FORMAT), text, "\0".join(cflags), uname.release, uname.version,
                 uname.machine, bcc_version):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:32]


def cache_dir() -> Path | None:
    """Where compiled objects are kept; None when caching is off
    (PKTFATE_BPF_CACHE=off) or the folder is not root's alone: programs loaded
    from it run in the kernel, so nobody else may write there."""
    setting = os.environ.get("PKTFATE_BPF_CACHE", "")
    if setting == "off":
        return None
    path = Path(setting) if setting else DEFAULT_CACHE
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.stat()
    except OSError:
        return None
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        return None
    return path


def read_cached(folder: Path | None, key: str) -> CompiledObject | None:
    if folder is None:
        return None
    try:
        return CompiledObject.from_json((folder / f"{key}.json").read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or unreadable: compiled again, and written anew


def write_cached(folder: Path | None, key: str, obj: CompiledObject) -> None:
    if folder is None:
        return
    tmp = folder / f".{key}.{os.getpid()}.tmp"
    try:
        tmp.write_text(obj.to_json())
        tmp.replace(folder / f"{key}.json")  # whole or not at all
    except OSError:
        tmp.unlink(missing_ok=True)


def forget_cached(folder: Path | None, key: str) -> None:
    if folder is not None:
        (folder / f"{key}.json").unlink(missing_ok=True)
