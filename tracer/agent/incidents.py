"""The armed watch's recordings on disk: one file per incident, named by time,
namespace and port, in a folder the agent keeps bounded (the newest `keep`
files, `max_bytes` in all). Each is a `pktfate watch --json` recording, which
`pktfate explain` and `pktfate report` read as any other."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

SUFFIX = ".jsonl"
PREFIX = "incident-"


@dataclass(frozen=True)
class IncidentStore:
    folder: Path
    keep: int = 20
    max_bytes: int = 200 * 1024 * 1024
    file_bytes: int = 50 * 1024 * 1024  # one recording stops growing past this

    def prepare(self) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    def new_path(self, port: int, netns: int, now: float | None = None) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now or time.time()))
        path = self.folder / f"{PREFIX}{stamp}-port{port}-netns{netns}{SUFFIX}"
        n = 1
        while path.exists():  # two incidents in one second
            n += 1
            path = self.folder / f"{PREFIX}{stamp}-port{port}-netns{netns}-{n}{SUFFIX}"
        return path

    def recordings(self) -> list[Path]:
        """Oldest first (names sort by time)."""
        return sorted(self.folder.glob(f"{PREFIX}*{SUFFIX}"))

    def prune(self, writing: Path | None = None) -> list[Path]:
        """Remove the oldest recordings past the bounds, never `writing`;
        returns what was removed."""
        files = [p for p in self.recordings() if p != writing]
        sizes = {p: _size(p) for p in files}
        total = sum(sizes.values()) + (_size(writing) if writing else 0)
        count = len(files) + (1 if writing else 0)
        removed = []
        for path in files:
            if count <= self.keep and total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            removed.append(path)
            count -= 1
            total -= sizes[path]
        return removed


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
