"""The kernel matrix: the lab's scenarios under Debian's own kernels (5.10, 6.1,
6.12), each booted in turn under qemu's software emulation from a cached image
(tests/vm/image.sh), with the top cause of each scenario's diagnosis checked
against the scenario's expected cause.

    python tests/vm/matrix.py --smoke --pytest PATH --pytest-kernels 6.1
                                               the subset `make test` runs
    python tests/vm/matrix.py --update-docs    every scenario; table into docs/KERNELS.md
    python tests/vm/matrix.py --no-scenarios --pytest tests/integration/test_lifecycle.py \
        --kernels 6.1                           the suite's own tests inside a guest

Prints the kernel x scenario table; exits 1 when a cell is wrong, 2 when the
matrix cannot run here (no qemu: `make setup-dev`)."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parents[1]
KERNELS_DOC = PROJECT / "docs" / "KERNELS.md"
KERNEL_SERIES = ("5.10", "6.1", "6.12")
# The checksum incident and three other causes, on every kernel.
SMOKE = ("checksum", "firewall-drop", "no-listener", "healthy")


@dataclass
class Cell:
    expected: str
    got: str  # the top finding's cause, or what went wrong
    inferred: bool = False  # the finding rests on reasons told by place (no drop reasons)

    @property
    def ok(self) -> bool:
        return self.got == self.expected

    def text(self) -> str:
        mark = "ok" if self.ok else f"WRONG (expected {self.expected})"
        return f"{self.got}{' (inferred)' if self.inferred else ''} {mark}"


def can_boot(who: str, why: str) -> bool:
    """Root and qemu, or a line on standard error saying which is missing."""
    if os.geteuid() != 0:
        print(f"{who}: run as root ({why})", file=sys.stderr)
        return False
    if not shutil.which("qemu-system-x86_64"):
        print(f"{who}: qemu is missing: run make setup-dev", file=sys.stderr)
        return False
    return True


def build_image() -> Path:
    proc = subprocess.run(["sh", str(HERE / "image.sh")], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"matrix: the VM image could not be built (exit {proc.returncode})")
    return Path(proc.stdout.strip().splitlines()[-1])


def kernels(image: Path) -> dict[str, str]:
    """series -> the image's kernel version of that series."""
    found = {}
    for path in sorted((image / "boot").glob("vmlinuz-*")):
        version = path.name[len("vmlinuz-"):]
        series = ".".join(version.split(".")[:2])
        series = re.sub(r"[^0-9.].*$", "", series)
        if series in KERNEL_SERIES:
            found[series] = version
    return found


def top_finding(lines_path: Path) -> tuple[str, bool]:
    try:
        lines = [json.loads(line) for line in lines_path.read_text().splitlines()
                 if line.startswith("{")]
    except (OSError, ValueError) as exc:
        return f"no result ({exc.__class__.__name__})", False
    diagnosis = [line for line in lines if line.get("kind") == "diagnosis"]
    if not diagnosis or not diagnosis[-1]["findings"]:
        return "no diagnosis", False
    top = diagnosis[-1]["findings"][0]
    return top["cause"], any("inferred" in line for line in top["evidence"])


@dataclass
class TestRun:
    """The suite's tests run inside one guest (guest-job.sh's pytest.xml)."""

    passed: int = 0
    skipped: int = 0
    failed: tuple[str, ...] = ()  # the failed and erroring tests' names
    ran: bool = False  # pytest.xml was written

    @property
    def ok(self) -> bool:
        return self.ran and not self.failed and self.passed > 0

    def text(self) -> str:
        if not self.ran:
            return "NO RESULT (pytest.xml missing)"
        said = f"{self.passed} passed, {self.skipped} skipped"
        return said if not self.failed else f"{said}, FAILED: {', '.join(self.failed)}"


def read_tests(job: Path) -> TestRun:
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(job / "pytest.xml").getroot()
    except (OSError, ET.ParseError):
        return TestRun()
    cases = list(root.iter("testcase"))
    failed = tuple(case.get("name", "?") for case in cases
                   if case.find("failure") is not None or case.find("error") is not None)
    skipped = sum(1 for case in cases if case.find("skipped") is not None)
    return TestRun(len(cases) - len(failed) - skipped, skipped, failed, True)


def run_kernel(image: Path, version: str, scenarios: list[str], duration: float,
               keep: Path | None, tests: list[str] = ()) -> tuple[dict[str, Cell], dict]:
    """Boot one kernel; its scenarios' cells and its facts (`tests`: a TestRun when
    the suite's tests ran in it)."""
    job = Path(tempfile.mkdtemp(prefix=f"pktfate-vm-{version}-"))
    (job / "commit").write_text(_commit() + "\n")
    (job / "env").write_text(f"SCENARIOS='{' '.join(scenarios)}'\nDURATION={duration:g}\n"
                             f"PYTEST='{' '.join(tests)}'\n")
    start = time.monotonic()
    # The tests take their own time under emulation: the VM's bound grows with them.
    timeout = {"VM_TIMEOUT": str(1500 + (3600 if tests else 0))}
    proc = subprocess.run(["sh", str(HERE / "run-vm.sh"), str(image), version, str(job)],
                          capture_output=True, text=True, env={**os.environ, **timeout})
    cells, facts = read_job(job, version, scenarios)
    if tests:
        facts["tests"] = read_tests(job)
    facts.update(seconds=round(time.monotonic() - start), qemu_exit=proc.returncode)
    if keep:
        shutil.rmtree(keep / version, ignore_errors=True)
        shutil.copytree(job, keep / version)
    shutil.rmtree(job, ignore_errors=True)
    return cells, facts


def read_job(job: Path, version: str, scenarios: list[str]) -> tuple[dict[str, Cell], dict]:
    """The cells and facts a VM's job folder holds (a run's, or one kept by --keep)."""
    from pktfate.lab.scenarios import SCENARIOS

    facts = {"seconds": "?", "kernel": _read(job / "kernel") or version,
             "reasons": (_read(job / "reasons.txt") or "").splitlines()[:1],
             "commit": _read(job / "commit") or "?"}
    cells = {}
    for name in scenarios:
        got, inferred = top_finding(job / f"{name}.jsonl")
        if not (job / "done").exists() and got.startswith("no result"):
            got = "VM did not finish"
        cells[name] = Cell(SCENARIOS[name].expect, got, inferred)
    return cells, facts


def _commit() -> str:
    """The checkout's commit, with '+' when it has changes not committed."""
    head = subprocess.run(["git", "-C", str(PROJECT), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip() or "?"
    dirty = subprocess.run(["git", "-C", str(PROJECT), "status", "--porcelain", "--",
                            "tracer", "bpf", "tests/vm"], capture_output=True, text=True).stdout
    return head + ("+" if dirty.strip() else "")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def table(results: dict[str, dict[str, Cell]], versions: dict[str, str]) -> list[str]:
    series = list(results)
    scenarios = sorted({name for cells in results.values() for name in cells})
    head = "| scenario | " + " | ".join(f"{s} ({versions[s]})" for s in series) + " |"
    lines = [head, "|---" * (len(series) + 1) + "|"]
    for name in scenarios:
        row = [results[s][name].text() if name in results[s] else "-" for s in series]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return lines


def update_docs(lines: list[str], facts: dict[str, dict]) -> None:
    text = KERNELS_DOC.read_text()
    today = datetime.date.today().isoformat()
    notes = [f"Run {today} on {platform.machine()}, host kernel {platform.release()}; "
             "each kernel booted under qemu TCG from tests/vm/image.sh's image."]
    notes += [f"- {series}: `{f['kernel']}`, commit {f.get('commit', '?')}, {f['seconds']} s; "
              f"`pktfate reasons`: {(f['reasons'] or ['?'])[0][:80]}"
              for series, f in facts.items()]
    block = "\n".join(notes + [""] + lines)
    text = re.sub(r"(<!-- matrix:begin -->\n).*?(\n<!-- matrix:end -->)",
                  lambda m: m.group(1) + block + m.group(2), text, flags=re.S)
    KERNELS_DOC.write_text(text)


def main(argv: list[str] | None = None) -> int:
    from pktfate.lab.scenarios import SCENARIOS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help=f"only {', '.join(SMOKE)}")
    parser.add_argument("--kernels", default=",".join(KERNEL_SERIES),
                        help="series to boot, comma-separated (default: all)")
    parser.add_argument("--scenario", action="append", help="only these scenarios")
    parser.add_argument("--no-scenarios", action="store_true", help="no lab scenario")
    parser.add_argument("--pytest", action="append", default=[], metavar="PATH",
                        help="also run these tests of the suite inside each guest")
    parser.add_argument("--pytest-kernels", help="run the --pytest tests in these series "
                        "only, comma-separated (default: every series booted)")
    parser.add_argument("--duration", type=float, default=10.0, help="each watch's seconds")
    parser.add_argument("--keep", type=Path, help="copy each VM's job folder here")
    parser.add_argument("--update-docs", action="store_true", help="write docs/KERNELS.md")
    parser.add_argument("--from-kept", type=Path, help="read the kernels whose job folder a "
                        "--keep left here instead of booting them")
    args = parser.parse_args(argv)
    if not can_boot("matrix", "it builds an image and boots VMs"):
        return 2
    scenarios = [] if args.no_scenarios else (
        args.scenario or (list(SMOKE) if args.smoke else sorted(SCENARIOS)))
    image = build_image()
    versions = kernels(image)
    results: dict[str, dict[str, Cell]] = {}
    facts: dict[str, dict] = {}
    for series in args.kernels.split(","):
        if series not in versions:
            print(f"matrix: the image has no {series} kernel", file=sys.stderr)
            return 2
        kept = args.from_kept / versions[series] if args.from_kept else None
        if kept and kept.is_dir():
            print(f"matrix: {versions[series]} from {kept}", file=sys.stderr, flush=True)
            results[series], facts[series] = read_job(kept, versions[series], scenarios)
            continue
        print(f"matrix: booting {versions[series]} for {len(scenarios)} scenarios",
              file=sys.stderr, flush=True)
        tests = args.pytest if series in (args.pytest_kernels or series).split(",") else []
        results[series], facts[series] = run_kernel(image, versions[series], scenarios,
                                                    args.duration, args.keep, tests)
    lines = table(results, versions) if scenarios else []
    runs = {series: f["tests"] for series, f in facts.items() if "tests" in f}
    if runs:
        lines += ["", f"tests inside the guests: {' '.join(args.pytest)}", ""]
        lines += [f"- {series} ({versions[series]}): {run.text()}" for series, run in runs.items()]
    print("\n".join(lines))
    if args.update_docs:
        update_docs(lines, facts)
    ok = all(c.ok for cells in results.values() for c in cells.values())
    return 0 if ok and all(run.ok for run in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
