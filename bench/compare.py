"""Two versions of pktfate side by side in one run: the user-space CPU per 1,000
events (the bench's row (d)) of each, alternated A B A B on the same flood, so
that a change's effect on the per-event path is told apart from the machine's
own drift (timings here move by a third from one hour to the next).

    sudo .venv/bin/python bench/compare.py REF_A REF_B [--rounds N]

Each REF is a git revision of this repository (a commit, a tag, HEAD~3, or
WORK for the working tree as it is). Each is checked out into a temporary
worktree and run from there (PYTHONPATH); the worktrees are removed at the end.
Prints each version's median and range and the ratio B/A of the medians.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.flood import VethPair  # noqa: E402
from bench.run import Sizes, cpu_per_thousand  # noqa: E402

WORK = "WORK"


def import_root(ref: str, tmp: Path, n: int) -> Path:
    """A folder from which `import pktfate` gives the version at `ref`: the package
    is tracer/ and its BPF C is bpf/, as pyproject.toml maps them."""
    if ref == WORK:
        checkout = ROOT
    else:
        checkout = tmp / f"tree-{n}"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach",
                        str(checkout), ref], check=True)
    package = tmp / f"import-{n}" / "pktfate"
    package.parent.mkdir()
    shutil.copytree(checkout / "tracer", package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(checkout / "bpf", package / "bpf")
    return package.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ref_a")
    parser.add_argument("ref_b")
    parser.add_argument("--rounds", type=int, default=5, help="alternations (default 5)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("compare: needs root (namespaces, BPF)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="pktfate-compare-"))
    pair = VethPair(f"pfc{os.getpid() % 10000}", 78)
    samples: dict[str, list[float]] = {args.ref_a: [], args.ref_b: []}
    try:
        roots = {ref: import_root(ref, tmp, n) for n, ref in enumerate(samples)}
        pair.up()
        one = Sizes(rounds=1)
        for _ in range(args.rounds):
            for ref, root in roots.items():
                os.environ["PYTHONPATH"] = str(root)
                samples[ref] += cpu_per_thousand(pair, one, tmp)
    finally:
        os.environ.pop("PYTHONPATH", None)
        pair.down()
        for tree in tmp.glob("tree-*"):
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(tree)], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    medians = {}
    for ref, values in samples.items():
        medians[ref] = statistics.median(values)
        print(f"{ref}: {medians[ref]:.2f} ms per 1,000 events (range {min(values):.2f}-"
              f"{max(values):.2f}, n={len(values)})")
    print(f"ratio {args.ref_b}/{args.ref_a}: {medians[args.ref_b] / medians[args.ref_a]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
