"""The BPF C sources, installed with the package (pktfate.bpf, the project's bpf/
folder), and the one text bcc compiles from them."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

MAIN = "pktfate.c"
_INCLUDE_RE = re.compile(r'^#include "([A-Za-z0-9_.]+)"\s*$', re.M)


def bpf_dir() -> Path:
    """Where the BPF sources are, in a checkout or an installed package alike."""
    folder = resources.files("pktfate.bpf")
    path = Path(str(folder))
    if not (path / MAIN).is_file():
        raise FileNotFoundError(f"the BPF sources are not installed with pktfate ({path})")
    return path


def render_source(main: Path | None = None) -> str:
    """bpf/pktfate.c with its local includes spliced in, each file once.

    bcc builds tracepoint argument structs only for probes it finds in the main
    text, so the hooks cannot stay in separately included files when compiled.
    """
    main = main or bpf_dir() / MAIN
    seen: set[str] = set()

    def expand(path: Path) -> str:
        def splice(match: re.Match) -> str:
            name = match.group(1)
            if name in seen:
                return f"/* {name}: already included */"
            seen.add(name)
            return f"/* ---- {name} ---- */\n" + expand(path.parent / name)

        return _INCLUDE_RE.sub(splice, path.read_text())

    return expand(main)


def compile_flags(defines: list[str]) -> list[str]:
    """The -D defines of a watch, with the include path of the sources."""
    return [f"-I{bpf_dir()}", *defines]
