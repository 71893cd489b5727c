"""What the tests read of the README: its tables are contracts, and the tests hold
the product to them (rather than a copy of them kept in a test)."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _table(marker: str) -> list[list[str]]:
    """The cells of each row of the table under `<!-- MARKER:` (its header and
    rule skipped)."""
    text = README.read_text()
    start = text.index(f"<!-- {marker}:")
    rows = []
    for line in text[start:].splitlines()[3:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


@lru_cache(maxsize=1)
def conditions() -> dict[str, int]:
    """The table of "When pktfate cannot do all of its job": condition -> status."""
    rows = {}
    for cells in _table("conditions"):
        line = " | ".join(cells)
        match = re.fullmatch(r"`([^`]+)`", cells[0])
        assert match, f"README conditions table: {line}"
        rows[match.group(1)] = int(cells[-1])
    return rows


def status_of(condition: str) -> int:
    """The exit status the README gives for a condition."""
    return conditions()[condition]


@lru_cache(maxsize=1)
def metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    """The "Fleet" section's table of the agent's metrics: name -> (type, labels)."""
    rows = {}
    for cells in _table("metrics"):
        line = " | ".join(cells)
        name = re.fullmatch(r"`([a-z_]+)`", cells[0])
        assert name, f"README metrics table: {line}"
        labels = tuple(re.findall(r"`([a-z_]+)`", cells[2]))
        rows[name.group(1)] = (cells[1], labels)
    return rows
