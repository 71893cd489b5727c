"""The compiled-object store (attach/objects.py): map references found and
rewritten in the instructions, the cache's key, format and trust rules. The load
itself is the kernel's: tests/integration (every watch loads through it)."""

import os
import struct
import sys
import types

import pytest

from pktfate.attach import objects
from pktfate.attach.objects import (
    LIBBCC_CALLS,
    CompiledObject,
    MapSpec,
    ProgramSpec,
    bcc_version,
    compile_object,
)
from pktfate.errors import PktfateError


def _insn(code: int, regs: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, regs, off, imm)


# r1 = map fd 7 (ld_imm64: two slots), r0 = 0, exit; then r2 = map fd 9
PROGRAM = (_insn(0x18, 0x11, 0, 7) + _insn(0) + _insn(0xB7) + _insn(0x95)
           + _insn(0x18, 0x12, 0, 9) + _insn(0))
# a 64-bit constant whose low half equals a map fd: not a map reference (src_reg 0)
CONSTANT = _insn(0x18, 0x01, 0, 7) + _insn(0)


def test_map_references_are_the_pseudo_fd_loads_only():
    assert objects.map_references(PROGRAM, {7: "pf_events", 9: "pf_stats"}) == (
        (0, "pf_events"), (4, "pf_stats"))
    assert objects.map_references(CONSTANT, {7: "pf_events"}) == ()


def test_an_unknown_fd_refuses_the_object():
    with pytest.raises(ValueError, match="fd 9"):
        objects.map_references(PROGRAM, {7: "pf_events"})


def test_new_fds_are_written_where_the_references_are():
    prog = ProgramSpec("pf_xdp", 6, PROGRAM, ((0, "pf_events"), (4, "pf_stats")))
    code = objects.with_map_fds(prog, {"pf_events": 31, "pf_stats": 32})
    assert struct.unpack_from("<i", code, 4)[0] == 31
    assert struct.unpack_from("<i", code, 4 * 8 + 4)[0] == 32
    # everything else unchanged
    assert code[:4] == PROGRAM[:4] and code[8:32] == PROGRAM[8:32]


def test_round_trip_and_tracepoint_names():
    obj = CompiledObject("GPL", 0, (MapSpec("pf_events", 27, 0, 0, 4096, 0),),
                         (ProgramSpec("tracepoint__skb__kfree_skb", 5, PROGRAM,
                                      ((0, "pf_events"),)),
                          ProgramSpec("pf_xdp", 6, CONSTANT, ())))
    again = CompiledObject.from_json(obj.to_json())
    assert again == obj
    assert [p.tracepoint for p in again.programs] == ["skb/kfree_skb", None]
    assert objects.program_type("tracepoint__tcp__tcp_bad_csum") == 5
    names = {ProgramSpec(f"tracepoint__{tp}", 5, b"", ()).kernel_name
             for tp in ("skb__kfree_skb", "skb__consume_skb", "tcp__tcp_send_reset")}
    assert names == {"pf_kfree_skb", "pf_consume_skb", "pf_tcp_send_res"}  # distinct, <= 15
    assert ProgramSpec("pf_tc_ingress", 3, b"", ()).kernel_name == "pf_tc_ingress"
    assert objects.program_type("pf_tc_egress") == 3


def test_the_key_changes_with_text_flags_and_bcc():
    base = objects.cache_key("int x;", ["-DA=1"], "0.26.0")
    assert base == objects.cache_key("int x;", ["-DA=1"], "0.26.0")
    assert len({base, objects.cache_key("int y;", ["-DA=1"], "0.26.0"),
                objects.cache_key("int x;", ["-DA=2"], "0.26.0"),
                objects.cache_key("int x;", ["-DA=1"], "0.29.1")}) == 4


def test_cache_is_used_only_when_nobody_else_can_write_it(tmp_path, monkeypatch):
    folder = tmp_path / "bpf"
    monkeypatch.setenv("PKTFATE_BPF_CACHE", str(folder))
    assert objects.cache_dir() == folder and (folder.stat().st_mode & 0o777) == 0o700
    folder.chmod(0o777)
    assert objects.cache_dir() is None
    monkeypatch.setenv("PKTFATE_BPF_CACHE", "off")
    assert objects.cache_dir() is None


def test_a_damaged_entry_reads_as_absent(tmp_path):
    obj = CompiledObject("GPL", 0, (), (ProgramSpec("pf_xdp", 6, CONSTANT, ()),))
    objects.write_cached(tmp_path, "k", obj)
    assert objects.read_cached(tmp_path, "k") == obj
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    (tmp_path / "k.json").write_text('{"format": 1, "maps": [')
    assert objects.read_cached(tmp_path, "k") is None
    (tmp_path / "k.json").write_text('{"format": 99}')
    assert objects.read_cached(tmp_path, "k") is None
    objects.forget_cached(tmp_path, "k")
    assert not (tmp_path / "k.json").exists()


def test_a_reference_past_the_code_refuses_the_object():
    prog = ProgramSpec("pf_xdp", 6, PROGRAM[:16], ((4, "pf_stats"),))
    with pytest.raises(ValueError, match="past the end"):
        objects.with_map_fds(prog, {"pf_stats": 3})


def test_kfunc_marks_become_calls_of_the_kernels_function():
    mark = 0x7FFF0001
    # r1 = map fd (two slots), call helper 1, call the mark, call another mark, exit
    code = (_insn(0x18, 0x11, 0, mark) + _insn(0) + _insn(0x85, 0, 0, 1)
            + _insn(0x85, 0, 0, mark) + _insn(0x85, 0, 0, mark + 1) + _insn(0x95))
    out = objects.with_kfuncs(code, {mark: 65475})
    assert out[3 * 8:4 * 8] == _insn(0x85, 0x20, 0, 65475)  # src_reg 2: a kfunc, by BTF id
    # the ld_imm64 holding the same number, the helper call and the unknown mark stay
    assert out[:3 * 8] == code[:3 * 8] and out[4 * 8:] == code[4 * 8:]
    assert objects.with_kfuncs(code, {}) == code


def test_the_distros_libbcc_has_every_call_pktfate_reads():
    from bcc.libbcc import lib

    assert [name for name in LIBBCC_CALLS if not hasattr(lib, name)] == []


def test_a_bcc_whose_libbcc_changed_is_one_line_naming_its_version(monkeypatch):
    class Lib:  # a libbcc without bpf_function_start (renamed, say)
        def __getattr__(self, name):
            if name == "bpf_function_start":
                raise AttributeError(name)
            return lambda *_args: 0

    fake = types.ModuleType("bcc.libbcc")
    fake.lib = Lib()
    monkeypatch.setitem(sys.modules, "bcc.libbcc", fake)
    with pytest.raises(PktfateError) as caught:
        compile_object(None, "", [])
    message = str(caught.value)
    assert f"bcc {bcc_version()} is not what pktfate knows" in message
    assert "bpf_function_start" in message and "\n" not in message
