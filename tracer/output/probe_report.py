"""`pktfate probe`'s report: for a terminal, or as one JSON line."""

from __future__ import annotations

import json
import textwrap
from typing import TextIO

from ..decode.typed import to_json
from ..diagnosis.origin import ttl_story
from ..probe.plan import AnswerKind, ProbeResult, answer_text, service_name
from .human import WIDTH


def _wrap(text: str, first: str, indent: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=first, subsequent_indent=indent,
                         break_on_hyphens=False, break_long_words=True)


def probe_lines(config, source: str, target_hops: int | None, reference: str,
                results: list[ProbeResult]) -> list[str]:
    """The probe's report for a terminal: per protocol and port, the hops, then
    what it means."""
    v6 = ":" in config.target
    services = ", ".join(service_name(r, v6) for r in results)
    lines = _wrap(f"pktfate probe {config.target} from {source}: {services} "
                  f"(up to {config.max_hops} hops)", "", "  ")
    if target_hops:
        lines.append(f"{config.target} is hop {target_hops} (from its {reference})")
    else:
        lines.append(f"{config.target}'s own distance is unknown: no echo replies or SYN-ACKs")
    for r in results:
        lines.append("")
        service = service_name(r, v6)
        answered = r.answer is not AnswerKind.NONE
        end = answer_text(r.answer, r.icmp_type, r.icmp_code, v6)
        by = {"target": f"from {config.target}", "path": "from a device on the path",
              "unknown": ""}[r.answered_by] if answered else ""
        lines.append(f"{service:<10} {end} {by}".rstrip())
        hops = r.hops if not r.blocked_here else ()
        for n, hop in enumerate(hops):
            if hop.answer is None or hop.ttl is None:
                if n and hops[n - 1].answer is None:
                    continue  # one line for a run of silent hops
                last = next((h.hop for h in hops[n:] if h.answer is not None), None)
                end_hop = (last - 1) if last else hops[-1].hop
                span = f"{hop.hop}" if end_hop == hop.hop else f"{hop.hop}-{end_hop}"
                lines.append(f"  hop {span:<3} *  (no answer)")
                continue
            note = "" if hop.answer is AnswerKind.TIME_EXCEEDED else \
                f"  {ttl_story(hop.ttl, v6)}"
            rtt = f"{hop.rtt_ms:.3f} ms" if hop.rtt_ms is not None else ""
            line = (f"  hop {hop.hop:<3} {hop.from_addr or '?':<16} "
                    f"{answer_text(hop.answer, None, hop.icmp_code, v6):<22} {rtt:>9}")
            # A long IPv6 address leaves no room for the note on the same line.
            lines += [line + note] if len(line + note) <= WIDTH else [line, " " * 10 + note]
        lines += _wrap(r.conclusion + ".", "  => ", "     ")
    return lines


def write_probe_report(stream: TextIO, config, source: str, target_hops: int | None,
                       reference: str, results: list[ProbeResult]) -> None:
    if config.json:
        stream.write(json.dumps({"kind": "probe", "target": config.target, "source": source,
                                 "target_hops": target_hops, "target_hops_from": reference,
                                 "results": to_json(results)}) + "\n")
    else:
        for line in probe_lines(config, source, target_hops, reference, results):
            stream.write(line + "\n")
    stream.flush()
