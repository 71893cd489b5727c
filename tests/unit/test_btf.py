"""The BTF reader on a small hand-built blob: anonymous unions, typedefs, enums."""

import struct

import pytest

from pktfate.kernel.btf import BTF, BTFError


def _blob() -> bytes:
    strings = b"\0int\0outer\0a\0b\0inner_t\0c\0reason\0R_ONE\0R_TWO\0"
    off = {s: strings.index(s.encode() + b"\0") for s in
           ("int", "outer", "a", "b", "inner_t", "c", "reason", "R_ONE", "R_TWO")}
    types = b""
    # 1: int, 4 bytes
    types += struct.pack("<III", off["int"], 1 << 24, 4) + struct.pack("<I", 32)
    # 2: struct { int c; } (anonymous), 4 bytes
    types += struct.pack("<III", 0, (4 << 24) | 1, 4) + struct.pack("<III", off["c"], 1, 0)
    # 3: typedef inner_t -> 2
    types += struct.pack("<III", off["inner_t"], 8 << 24, 2)
    # 4: anonymous union { int b; }, 4 bytes
    types += struct.pack("<III", 0, (5 << 24) | 1, 4) + struct.pack("<III", off["b"], 1, 0)
    # 5: struct outer { int a; union { int b; }; inner_t in; } = 12 bytes
    types += struct.pack("<III", off["outer"], (4 << 24) | 3, 12)
    types += struct.pack("<III", off["a"], 1, 0)
    types += struct.pack("<III", 0, 4, 32)
    types += struct.pack("<III", off["inner_t"], 3, 64)
    # 6: enum reason { R_ONE = 1, R_TWO = 7 }
    types += struct.pack("<III", off["reason"], (6 << 24) | 2, 4)
    types += struct.pack("<Ii", off["R_ONE"], 1) + struct.pack("<Ii", off["R_TWO"], 7)
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return header + types + strings


def test_member_through_anonymous_union():
    assert BTF(_blob()).field("outer", "b").offset == 4


def test_dotted_path_through_typedef():
    field = BTF(_blob()).field("outer", "inner_t.c")
    assert (field.offset, field.size) == (8, 4)


def test_enum_values():
    assert BTF(_blob()).enum("reason") == {1: "R_ONE", 7: "R_TWO"}


def test_missing_member_is_an_error():
    with pytest.raises(BTFError):
        BTF(_blob()).field("outer", "nope")


def test_not_btf():
    with pytest.raises(BTFError):
        BTF(b"\0" * 64)


def _raw_tracepoint_blob() -> bytes:
    """btf_trace_ev: a raw tracepoint whose arguments are (sk_buff *, void *, enum
    reason), behind the probe's own void * first, as kernels lay them out."""
    strings = b"\0sk_buff\0reason\0btf_trace_ev\0"
    off = {s: strings.index(s.encode() + b"\0") for s in ("sk_buff", "reason", "btf_trace_ev")}
    types = b""
    types += struct.pack("<III", off["sk_buff"], 4 << 24, 0)  # 1: struct sk_buff {}
    types += struct.pack("<III", 0, 2 << 24, 1)  # 2: sk_buff *
    types += struct.pack("<III", 0, 2 << 24, 0)  # 3: void *
    types += struct.pack("<III", off["reason"], (6 << 24) | 0, 4)  # 4: enum reason
    # 5: void (void *, sk_buff *, void *, enum reason), parameters unnamed
    types += struct.pack("<III", 0, (13 << 24) | 4, 0)
    types += b"".join(struct.pack("<II", 0, t) for t in (3, 2, 3, 4))
    types += struct.pack("<III", 0, 2 << 24, 5)  # 6: pointer to it
    types += struct.pack("<III", off["btf_trace_ev"], 8 << 24, 6)  # 7: the typedef
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return header + types + strings


def test_raw_tracepoint_arguments_by_type():
    assert BTF(_raw_tracepoint_blob()).raw_tracepoint("ev") == \
        (7, ("sk_buff *", "void *", "reason"))
    with pytest.raises(BTFError):
        BTF(_raw_tracepoint_blob()).raw_tracepoint("other")


def test_functions_by_exact_name():
    # Functions are indexed by their name's string offset: "my_kf" must not be
    # found as "kf", nor a struct as a function.
    strings = b"\0my_kf\0kf\0iphdr\0"
    off = {s: strings.index(b"\0" + s.encode() + b"\0") + 1 for s in ("my_kf", "kf", "iphdr")}
    types = struct.pack("<III", 0, 13 << 24, 0)  # 1: void (void)
    types += struct.pack("<III", off["my_kf"], 12 << 24, 1)  # 2: func my_kf
    types += struct.pack("<III", off["kf"], 12 << 24, 1)  # 3: func kf
    types += struct.pack("<III", off["iphdr"], 4 << 24, 0)  # 4: struct iphdr {}
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    btf = BTF(header + types + strings)
    assert (btf.func_id("kf"), btf.func_id("my_kf")) == (3, 2)
    with pytest.raises(BTFError):
        btf.func_id("iphdr")
    with pytest.raises(BTFError):
        btf.func_id("y_kf")
