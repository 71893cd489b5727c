"""Read struct member offsets and enum values from the running kernel's BTF.

pktfate never trusts a header's struct layout: the kernel it runs on may be built
with other options than any header tree on disk. BTF (/sys/kernel/btf/vmlinux)
describes the real layout, so every kernel field the BPF programs read is located
here. Pure Python: no bcc, no root (the file is world-readable on most kernels).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")

_MAGIC = 0xEB9F
# BTF kinds (include/uapi/linux/btf.h); only the ones we walk into are named.
_INT, _PTR, _ARRAY, _STRUCT, _UNION, _ENUM, _FWD, _TYPEDEF = 1, 2, 3, 4, 5, 6, 7, 8
_VOLATILE, _CONST, _RESTRICT, _FUNC, _FUNC_PROTO, _VAR, _DATASEC = 9, 10, 11, 12, 13, 14, 15
_FLOAT, _DECL_TAG, _TYPE_TAG, _ENUM64 = 16, 17, 18, 19
_NAMED_KINDS = {_STRUCT, _UNION, _ENUM, _ENUM64, _TYPEDEF}
_MODIFIERS = {_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG}


class BTFError(Exception):
    """BTF is missing, malformed, or lacks what was asked for."""


@dataclass(frozen=True)
class Field:
    offset: int  # bytes from the start of the outer struct
    size: int  # bytes


def _extra_len(kind: int, vlen: int) -> int:
    """Bytes of kind-specific data that follow the 12-byte common type header."""
    if kind in (_INT, _VAR, _DECL_TAG):
        return 4
    if kind == _ARRAY:
        return 12
    if kind in (_STRUCT, _UNION, _DATASEC, _ENUM64):
        return 12 * vlen
    if kind in (_ENUM, _FUNC_PROTO):
        return 8 * vlen
    return 0


class BTF:
    """An index over one BTF blob: types by id, named aggregates by name."""

    def __init__(self, blob: bytes):
        if len(blob) < 24:
            raise BTFError("BTF blob too short")
        magic, _ver, _flags, hdr_len = struct.unpack_from("<HBBI", blob, 0)
        if magic != _MAGIC:
            raise BTFError("not a little-endian BTF blob")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", blob, 8)
        self._blob = blob
        self._types_start = hdr_len + type_off
        self._strs = blob[hdr_len + str_off : hdr_len + str_off + str_len]
        self._offsets: list[int] = [0]  # type id 0 is void
        self._by_name: dict[str, list[int]] = {}
        self._funcs: dict[int, int] = {}  # a function's name (string offset) -> type id
        self._index(type_len)

    @classmethod
    def from_file(cls, path: Path = VMLINUX_BTF) -> BTF:
        try:
            return cls(path.read_bytes())
        except OSError as exc:
            raise BTFError(f"cannot read {path}: {exc.strerror}") from exc

    def _index(self, type_len: int) -> None:
        blob, pos, end = self._blob, self._types_start, self._types_start + type_len
        unpack = struct.unpack_from
        while pos < end:
            name_off, info = unpack("<II", blob, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            self._offsets.append(pos)
            if kind in _NAMED_KINDS and name_off:
                self._by_name.setdefault(self._str(name_off), []).append(len(self._offsets) - 1)
            elif kind == _FUNC:  # tens of thousands: by string offset, decoded on demand
                self._funcs[name_off] = len(self._offsets) - 1
            pos += 12 + _extra_len(kind, vlen)

    def _str(self, off: int) -> str:
        end = self._strs.index(b"\0", off)
        return self._strs[off:end].decode()

    def _header(self, type_id: int) -> tuple[int, int, int, int, int]:
        pos = self._offsets[type_id]
        name_off, info, size_or_type = struct.unpack_from("<III", self._blob, pos)
        return (info >> 24) & 0x1F, info & 0xFFFF, info >> 31, name_off, size_or_type

    def _find(self, name: str, kinds: set[int]) -> int:
        for named_id in self._by_name.get(name, []):
            type_id = self._resolve(named_id) if self._header(named_id)[0] == _TYPEDEF else named_id
            kind = self._header(type_id)[0]
            if kind in kinds and not (kind in (_STRUCT, _UNION) and self._is_empty(type_id)):
                return type_id
        raise BTFError(f"type '{name}' not in BTF")

    def _is_empty(self, type_id: int) -> bool:
        return self._header(type_id)[1] == 0 and self._header(type_id)[4] == 0

    def _resolve(self, type_id: int) -> int:
        """Skip typedefs and qualifiers to reach the underlying type."""
        while type_id and self._header(type_id)[0] in _MODIFIERS:
            type_id = self._header(type_id)[4]
        return type_id

    def _size(self, type_id: int) -> int:
        type_id = self._resolve(type_id)
        kind, _vlen, _kf, _name, size_or_type = self._header(type_id)
        if kind == _PTR:
            return 8
        if kind == _ARRAY:
            elem, _idx, nelems = struct.unpack_from("<III", self._blob, self._offsets[type_id] + 12)
            return self._size(elem) * nelems
        return size_or_type

    def _members(self, type_id: int):
        kind, vlen, kflag, _name, _size = self._header(type_id)
        if kind not in (_STRUCT, _UNION):
            return
        pos = self._offsets[type_id] + 12
        for i in range(vlen):
            name_off, mtype, moff = struct.unpack_from("<III", self._blob, pos + 12 * i)
            bit_off = moff & 0xFFFFFF if kflag else moff
            yield (self._str(name_off) if name_off else ""), mtype, bit_off

    def _member(self, type_id: int, name: str) -> tuple[int, int] | None:
        """(bit offset, type id) of `name`, looking through anonymous members."""
        for mname, mtype, bit_off in self._members(type_id):
            if mname == name:
                return bit_off, mtype
            if not mname:
                inner = self._member(self._resolve(mtype), name)
                if inner is not None:
                    return bit_off + inner[0], inner[1]
        return None

    def field(self, struct_name: str, path: str) -> Field:
        """Byte offset and size of a dotted member path, such as 'ns.inum' in 'net'."""
        type_id = self._find(struct_name, {_STRUCT, _UNION})
        bits = 0
        for part in path.split("."):
            found = self._member(self._resolve(type_id), part)
            if found is None:
                raise BTFError(f"'{struct_name}' has no member '{path}'")
            bits += found[0]
            type_id = found[1]
        if bits % 8:
            raise BTFError(f"'{struct_name}.{path}' is a bitfield")
        return Field(bits // 8, self._size(type_id))

    def func_id(self, name: str) -> int:
        """The type id of kernel function `name` (a kfunc a program may call)."""
        at = self._strs.find(b"\0" + name.encode() + b"\0")
        type_id = self._funcs.get(at + 1) if at >= 0 else None
        if type_id is None:
            raise BTFError(f"function '{name}' not in BTF")
        return type_id

    def struct_id(self, name: str) -> int:
        """The type id of struct `name`."""
        return self._find(name, {_STRUCT})

    def raw_tracepoint(self, event: str) -> tuple[int, tuple[str, ...]]:
        """The id of `btf_trace_<event>` (what a BTF-typed raw tracepoint program
        names as its attach point) and the types of the tracepoint's arguments, in
        order, as type_name() spells them: kfree_skb's are ('sk_buff *', 'void *')
        on 5.10, ('sk_buff *', 'void *', 'skb_drop_reason', 'sock *') on 6.12. The
        kernel passes them as an array of u64; the typedef does not name them."""
        for type_id in self._by_name.get(f"btf_trace_{event}", []):
            kind, _vlen, _kf, _name, target = self._header(type_id)
            if kind != _TYPEDEF:
                continue
            ptr = self._header(target)
            proto_id = ptr[4] if ptr[0] == _PTR else 0
            kind, vlen, _kf, _name, _ret = self._header(proto_id) if proto_id else (0,) * 5
            if kind != _FUNC_PROTO or vlen < 1:
                continue
            pos = self._offsets[proto_id] + 12
            types = [self.type_name(struct.unpack_from("<I", self._blob, pos + 8 * i + 4)[0])
                     for i in range(vlen)]
            return type_id, tuple(types[1:])  # the first is the probe's own data pointer
        raise BTFError(f"no BTF-typed raw tracepoint '{event}'")

    def type_name(self, type_id: int) -> str:
        """A type as 'sk_buff *', 'void *', 'skb_drop_reason', 'unsigned int'."""
        type_id = self._resolve(type_id) if self._header(type_id)[0] != _TYPEDEF else type_id
        kind, _vlen, _kf, name_off, target = self._header(type_id)
        if kind == _PTR:
            inner = self._resolve(target)
            return (self._str(self._header(inner)[3]) or "void" if inner else "void") + " *"
        return self._str(name_off) if name_off else "?"

    def enum(self, enum_name: str) -> dict[int, str]:
        """Value -> name of every enumerator of `enum_name`."""
        type_id = self._find(enum_name, {_ENUM, _ENUM64})
        kind, vlen, _kf, _name, _size = self._header(type_id)
        pos = self._offsets[type_id] + 12
        values: dict[int, str] = {}
        for i in range(vlen):
            if kind == _ENUM:
                name_off, val = struct.unpack_from("<Ii", self._blob, pos + 8 * i)
            else:
                name_off, lo, hi = struct.unpack_from("<III", self._blob, pos + 12 * i)
                val = lo | (hi << 32)
            values.setdefault(val, self._str(name_off))
        return values
