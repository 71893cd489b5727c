"""The agent's log: one JSON object per line on standard output, for the node's
log collector (journald, a DaemonSet's container log). Fields: the README's
"Fleet" section."""

from __future__ import annotations

import json
import time
from typing import TextIO

from ..diagnosis.evidence import Finding
from ..model.fleet import Workload
from .jsonl import finding_json
from .metrics import workload_label


def _stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def log_line(stream: TextIO, event: str, **fields: object) -> None:
    stream.write(json.dumps({"time": _stamp(), "event": event, **fields}) + "\n")
    stream.flush()


def incident_fields(netns: int, workload: Workload, port: int, failures: int) -> dict:
    return {"netns": netns, "workload": workload_label(workload), "port": port,
            "failures": failures}


def findings_fields(findings: list[Finding]) -> dict:
    return {"top_cause": findings[0].cause if findings else None,
            "findings": [finding_json(f) for f in findings]}
