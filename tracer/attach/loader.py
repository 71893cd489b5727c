"""Load a compiled object (attach/objects.py) into the kernel: create its maps,
load its programs with the maps' fds written in, attach its tracepoint programs.
Every fd is this process's: when it ends, for any reason, the kernel frees the
maps and programs and removes the tracepoint attachments with them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from ..kernel import bpfsys
from ..kernel.features import link_forms
from .objects import CompiledObject, MapSpec, ProgramSpec, with_kfuncs, with_map_fds

_PERCPU_TYPES = {5, 6, 10}  # BPF_MAP_TYPE_PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH


class BpfMap:
    """One map, by raw bytes: the decode layer gives keys and values their shape."""

    def __init__(self, spec: MapSpec, fd: int):
        self.spec, self.fd = spec, fd
        self.percpu = spec.type in _PERCPU_TYPES
        # A per-CPU value comes as one 8-byte-aligned slot per possible CPU.
        self.slot = (spec.value_size + 7) // 8 * 8
        self.value_len = self.slot * bpfsys.possible_cpus() if self.percpu else spec.value_size

    def lookup(self, key: bytes) -> bytes | None:
        return bpfsys.map_lookup(self.fd, key, self.value_len)

    def update(self, key: bytes, value: bytes) -> None:
        if self.percpu:
            value = value.ljust(self.slot, b"\0") * bpfsys.possible_cpus()
        bpfsys.map_update(self.fd, key, value)

    def keys(self) -> Iterator[bytes]:
        key = bpfsys.map_next_key(self.fd, None, self.spec.key_size)
        while key is not None:
            yield key
            key = bpfsys.map_next_key(self.fd, key, self.spec.key_size)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        for key in self.keys():
            value = self.lookup(key)
            if value is not None:  # deleted meanwhile
                yield key, value

    def per_cpu(self, value: bytes) -> list[bytes]:
        return [value[i:i + self.spec.value_size] for i in range(0, len(value), self.slot)]


def verifier_reason(log: str | None) -> str:
    """The verifier's own words on why it refused a program: its log's last line
    that is not one of the statistics it ends with ("processed N insns ...")."""
    lines = [line for line in (log or "").strip().splitlines()
             if line and not line.startswith(("processed ", "verification time", "stack depth"))]
    return lines[-1] if lines else ""


@dataclass
class LoadedObject:
    maps: dict[str, BpfMap] = field(default_factory=dict)
    programs: dict[str, int] = field(default_factory=dict)  # name -> fd
    tracepoints: dict[str, str] = field(default_factory=dict)  # 'skb/kfree_skb' -> how
    # BTF-typed raw tracepoints the kernel refused (to load or attach), and why:
    # their regular twins took their place.
    raw_refused: dict[str, str] = field(default_factory=dict)
    _fds: list[int] = field(default_factory=list)
    _map_fds: dict[str, int] = field(default_factory=dict)
    _kfunc_ids: dict[int, int] = field(default_factory=dict)

    @classmethod
    def load(cls, obj: CompiledObject, raw_btf_ids: dict[str, int] | None = None,
             kfunc_ids: dict[int, int] | None = None) -> LoadedObject:
        """Create the maps and load the programs. A raw tracepoint program
        (objects.RAW_PROGRAMS) is loaded where raw_btf_ids has its tracepoint's
        BTF id, and then its regular twin is not; where the kernel refuses it,
        the twin is loaded instead. kfunc_ids: each kfunc mark's BTF id here
        (objects.with_kfuncs)."""
        loaded = cls()
        loaded._kfunc_ids = kfunc_ids or {}
        raw_btf_ids = raw_btf_ids or {}
        try:
            for spec in obj.maps:
                fd = bpfsys.map_create(spec.type, spec.name, spec.key_size, spec.value_size,
                                       spec.max_entries, spec.flags)
                loaded._fds.append(fd)
                loaded.maps[spec.name] = BpfMap(spec, fd)
            loaded._map_fds = {name: m.fd for name, m in loaded.maps.items()}
            raw = [p for p in obj.programs if p.raw_tracepoint in raw_btf_ids]
            for prog in raw:
                loaded._load_raw(obj, prog, raw_btf_ids[prog.raw_tracepoint or ""])
            for prog in obj.programs:
                if prog.raw_tracepoint is None and not (
                        prog.tracepoint and prog.tracepoint in loaded._raw_loaded(obj)):
                    loaded._load(obj, prog)
        except BaseException:
            loaded.close()
            raise
        return loaded

    def _load(self, obj: CompiledObject, prog: ProgramSpec, attach_btf_id: int = 0) -> int:
        raw = attach_btf_id != 0
        code = with_kfuncs(with_map_fds(prog, self._map_fds), self._kfunc_ids)
        fd = bpfsys.prog_load(prog.type, prog.kernel_name, code,
                              obj.license, obj.kern_version,
                              bpfsys.ATTACH_TRACE_RAW_TP if raw else 0, attach_btf_id)
        self._fds.append(fd)
        self.programs[prog.name] = fd
        return fd

    def _load_raw(self, obj: CompiledObject, prog: ProgramSpec, btf_id: int) -> None:
        try:
            self._load(obj, prog, btf_id)
        except bpfsys.BpfError as exc:
            self.raw_refused[prog.raw_tracepoint or ""] = verifier_reason(exc.log) or str(exc)

    def _raw_loaded(self, obj: CompiledObject) -> set[str]:
        return {p.raw_tracepoint for p in obj.programs
                if p.raw_tracepoint and p.name in self.programs}

    def attach_tracepoints(self, obj: CompiledObject, tracefs: Path) -> None:
        """Each raw tracepoint program through its link; each tracepoint program
        on its tracepoint, through a perf link where the kernel has them (5.15),
        else the perf event's ioctl; all end with their fd. A raw program the
        kernel will not attach gives way to its regular twin."""
        raw = self._raw_loaded(obj)
        for prog in obj.programs:
            if prog.raw_tracepoint in raw:
                try:
                    self._fds.append(bpfsys.raw_tracepoint_open(self.programs[prog.name]))
                    self.tracepoints[prog.raw_tracepoint or ""] = "raw tracepoint link"
                except bpfsys.BpfError as exc:
                    self.raw_refused[prog.raw_tracepoint or ""] = str(exc)
                    fd = self.programs.pop(prog.name)
                    self._fds.remove(fd)
                    os.close(fd)
                    twin = next(p for p in obj.programs if p.tracepoint == prog.raw_tracepoint)
                    self._load(obj, twin)
        for prog in obj.programs:
            name = prog.tracepoint
            if name is None or prog.name not in self.programs:
                continue
            tp_id = int((tracefs / "events" / name / "id").read_text())
            perf_fd = bpfsys.perf_tracepoint(tp_id)
            self._fds.append(perf_fd)
            if not link_forms().perf:
                bpfsys.perf_set_bpf(perf_fd, self.programs[prog.name])
                self.tracepoints[name] = "perf event"
                continue
            try:
                self._fds.append(bpfsys.link_create(self.programs[prog.name], perf_fd,
                                                    bpfsys.ATTACH_PERF_EVENT))
                self.tracepoints[name] = "perf link"
            except bpfsys.BpfError:
                bpfsys.perf_set_bpf(perf_fd, self.programs[prog.name])
                self.tracepoints[name] = "perf event"

    def keep(self, fd: int) -> None:
        """An fd to close with the object (a link, for instance)."""
        self._fds.append(fd)

    def close(self) -> None:
        """Links and perf events first (detaching), then programs, then maps."""
        while self._fds:
            fd = self._fds.pop()
            with suppress(OSError):
                os.close(fd)
