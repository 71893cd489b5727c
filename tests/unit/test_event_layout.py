"""The Python mirror of struct pf_event must match the C header byte for byte."""

import ctypes
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pktfate.decode.raw import (
    AGG_HOT_SLOTS,
    EVENT_STRUCT,
    PORT_WORDS,
    RING_FIELDS,
    RING_STRUCT,
    SETTING_NETNS,
    SHARED_END,
    SHARED_START,
    SNAP_LEN,
    STAT_AGG_FULL,
    STAT_LOST,
    STAT_SAMPLED,
    STAT_SLOTS,
    CsumVerdict,
    Hook,
    RawAggHot,
    RawAggKey,
    RawEvent,
    event_record,
    full_record,
    merge_agg_counts,
    port_bitmap,
)
from pktfate.model.kinds import CSUM_NAMES, HOOK_NAMES

from ..kernel_side import RawTrackSlot, ring_form, ring_record

BPF = Path(__file__).resolve().parents[2] / "bpf"


def _c_layout(tmp_path: Path, struct: str, mirror) -> dict[str, int]:
    fields = [name for name, _ in mirror._fields_]
    lines = [f'printf("{n} %zu\\n", offsetof(struct {struct}, {n}));' for n in fields]
    program = tmp_path / "layout.c"
    program.write_text(
        "#include <stdio.h>\n#include <stddef.h>\n#include <stdint.h>\n"
        "typedef uint64_t __u64; typedef uint32_t __u32; typedef uint16_t __u16;"
        " typedef uint8_t __u8;\n"
        f'#include "{BPF / "event.h"}"\n'
        "int main(void) {\n" + "\n".join(lines) +
        f'\nprintf("sizeof %zu\\n", sizeof(struct {struct}));\nreturn 0;\n}}\n')
    exe = tmp_path / "layout"
    # make setup installs gcc: without a compiler this is a set-up fault, not a skip.
    assert shutil.which("cc"), "no C compiler (cc): run make setup"
    subprocess.run(["cc", "-o", str(exe), str(program)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {name: int(value) for name, value in (line.split() for line in out.splitlines())}


@pytest.mark.parametrize(("struct", "mirror"), [("pf_event", RawEvent), ("pf_agg_key", RawAggKey),
                                                ("pf_agg_hot", RawAggHot),
                                                ("pf_track_slot", RawTrackSlot)])
def test_mirror_matches_header(tmp_path, struct, mirror):
    layout = _c_layout(tmp_path, struct, mirror)
    assert layout.pop("sizeof") == ctypes.sizeof(mirror)
    for name, offset in layout.items():
        assert getattr(mirror, name).offset == offset, name
    assert ctypes.sizeof(mirror) % 8 == 0


def test_the_unpacked_record_reads_what_the_mirror_reads():
    """EVENT_STRUCT (one unpack per event from the ring) and the ctypes mirror agree
    on every field, arrays as their bytes."""
    raw = RawEvent()
    for number, (name, ctype) in enumerate(RawEvent._fields_, start=1):
        if hasattr(ctype, "_length_"):
            for i in range(ctype._length_):
                getattr(raw, name)[i] = (number * 7 + i) & 0xFF
        else:
            setattr(raw, name, number * 1001)
    assert EVENT_STRUCT.size == ctypes.sizeof(RawEvent)
    record = event_record(b"\xff" * 8 + bytes(raw), 8)
    for name, ctype in RawEvent._fields_:
        if name.startswith("_"):
            continue
        want = getattr(raw, name)
        got = getattr(record, name)
        assert got == (bytes(want) if hasattr(ctype, "_length_") else want), name


def test_the_ring_form_reads_the_per_packet_fields_and_the_shared_span_whole():
    # The ring reader hands records over as RING_STRUCT's tuples: what changes per
    # packet one by one, the span every event of a shape shares as its bytes.
    raw = RawEvent()
    for number, (name, ctype) in enumerate(RawEvent._fields_, start=1):
        if hasattr(ctype, "_length_"):
            for i in range(ctype._length_):
                getattr(raw, name)[i] = (number * 7 + i) & 0xFF
        elif not name.startswith("_"):
            setattr(raw, name, number * 1001)
    data = bytes(raw)
    assert RING_STRUCT.size == ctypes.sizeof(RawEvent)
    record = dict(zip(RING_FIELDS, ring_record(b"\xff" * 8 + data, 8)))
    assert record.pop("shared") == data[SHARED_START:SHARED_END]
    assert record.pop("snap") == bytes(raw.snap)
    assert record == {name: getattr(raw, name) for name in record}
    assert set(record) == {"ts_ns", "skb", "seq", "ack_seq", "pkt_len", "ip_id", "l4_csum",
                           "l4_len", "ttl", "csum_verdict"}
    assert full_record(ring_record(data)) == event_record(data)
    assert ring_form(event_record(data)) == ring_record(data)


def test_struct_is_8_byte_aligned_and_padded_explicitly():
    assert ctypes.sizeof(RawEvent) % 8 == 0
    assert RawEvent.snap.offset % 8 == 0
    assert RawEvent.snap.size == SNAP_LEN


def _c_enum(text: str, name: str, prefix: str) -> dict[str, int]:
    body = re.search(rf"enum {name} \{{(.*?)\}};", text, re.S).group(1)
    return {m.group(1): int(m.group(2)) for m in re.finditer(rf"({prefix}_\w+) = (\d+)", body)}


def test_hook_enum_matches_header_by_name_and_value():
    hooks = _c_enum((BPF / "event.h").read_text(), "pf_hook", "PF_HOOK")
    assert hooks == {f"PF_HOOK_{hook.name}": hook.value for hook in Hook}
    assert sorted(HOOK_NAMES) == sorted(hooks.values())  # every hook has its JSON name


def test_checksum_verdict_enum_matches_header_by_name_and_value():
    verdicts = _c_enum((BPF / "event.h").read_text(), "pf_csum", "PF_CSUM")
    assert verdicts == {f"PF_CSUM_{verdict.name}": verdict.value for verdict in CsumVerdict}
    # every verdict but none has its JSON name
    assert set(CSUM_NAMES) == set(CsumVerdict) - {CsumVerdict.NONE}


def test_stat_slots_match_header():
    text = (BPF / "filter.h").read_text()
    assert f"#define PF_STAT_LOST {STAT_LOST}" in text
    assert f"#define PF_STAT_SLOTS {STAT_SLOTS}" in text
    assert f"#define PF_STAT_SAMPLED {STAT_SAMPLED}" in text
    assert f"#define PF_STAT_AGG_FULL {STAT_AGG_FULL}" in text
    assert f"#define PF_SETTING_NETNS {SETTING_NETNS}" in text
    assert f"#define PF_PORT_WORDS {PORT_WORDS}" in text
    assert PORT_WORDS * 64 == 65536


def test_port_bitmap_sets_one_bit_per_port():
    assert port_bitmap([80, 81, 8080, 0, 65535]) == {
        1: (1 << 16) | (1 << 17), 126: 1 << 16, 0: 1, 1023: 1 << 63}


def test_hot_slots_take_over_their_cpus_count_for_their_key():
    """pf_agg's per-CPU slot for a hot key lags (bpf/filter.h, pf_aggregate): the hot
    slot's count replaces it on that CPU only; other CPUs and keys keep theirs."""
    a, b, c = b"a" * 48, b"b" * 48, b"c" * 48
    entries = [(a, [5, 7]), (b, [1, 0])]
    hot = {(a, 0): 40, (b, 1): 3, (c, 1): 2}
    assert sorted(merge_agg_counts(hot, entries)) == [(a, 47), (b, 4), (c, 2)]
    assert merge_agg_counts({}, entries) == [(a, 12), (b, 1)]


def test_hot_slots_cover_every_hook():
    assert f"#define PF_AGG_HOT_SLOTS {AGG_HOT_SLOTS}" in (BPF / "event.h").read_text()
    assert max(int(h) for h in Hook) < AGG_HOT_SLOTS
    assert RawAggHot.count.offset == ctypes.sizeof(RawAggKey)
