"""Name kernel code addresses (kfree_skb's location) from /proc/kallsyms."""

from __future__ import annotations

import bisect
from pathlib import Path


class KernelSymbols:
    def __init__(self, text: str):
        pairs = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1] in "tTwW":
                addr = int(parts[0], 16)
                if addr:
                    pairs.append((addr, parts[2]))
        pairs.sort()
        self._addrs = [a for a, _ in pairs]
        self._names = [n for _, n in pairs]

    @classmethod
    def load(cls, path: Path = Path("/proc/kallsyms")) -> KernelSymbols:
        try:
            return cls(path.read_text())
        except OSError:
            return cls("")

    def locate(self, addr: int) -> tuple[str, int | None]:
        """(function, offset into it), or (the bare address, None) when it cannot
        be named (for example when kallsyms hides addresses from non-root readers)."""
        i = bisect.bisect_right(self._addrs, addr) - 1
        if i < 0:
            return f"{addr:#x}", None
        return self._names[i], addr - self._addrs[i]
