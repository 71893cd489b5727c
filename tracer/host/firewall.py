"""Which firewall rule dropped the packets: rule counters that moved during the
watch, read without changing the firewall (iptables-save -c, nft list ruleset)."""

from __future__ import annotations

import re
import shutil
import subprocess

VERDICTS = ("DROP", "REJECT", "drop", "reject")
_IPT_RULE = re.compile(r"^\[(\d+):(\d+)\] (-A \S+ .*)$")
_NFT_COUNTER = re.compile(r"\s*counter packets (\d+) bytes \d+")
_NFT_HANDLE = re.compile(r"\s*# handle \d+$")


def parse_iptables_save(text: str, family: str = "ip") -> dict[str, int]:
    """'iptables -t TABLE -A CHAIN ...' -> packets, for each rule of `iptables-save -c`."""
    rules: dict[str, int] = {}
    table = "filter"
    tool = "iptables" if family == "ip" else "ip6tables"
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
            continue
        match = _IPT_RULE.match(line)
        if match:
            rules[f"{tool} -t {table} {match.group(3)}"] = int(match.group(1))
    return rules


def parse_nft_ruleset(text: str) -> dict[str, int]:
    """'nft ... table T chain C: RULE' -> packets, for each rule with a counter."""
    rules: dict[str, int] = {}
    table = chain = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("table "):
            table = line[len("table "):].rstrip(" {")
        elif line.startswith("chain "):
            chain = line[len("chain "):].rstrip(" {")
        else:
            match = _NFT_COUNTER.search(line)
            if match and table and chain:
                rule = _NFT_HANDLE.sub("", _NFT_COUNTER.sub("", line)).strip()
                rules[f"nft table {table} chain {chain}: {rule}"] = int(match.group(1))
    return rules


def _run(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return ""
    proc = subprocess.run(argv, capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else ""


IPTABLES_NFT_TABLES = {f"{fam} {name}" for fam in ("ip", "ip6")
                       for name in ("filter", "nat", "mangle", "raw", "security")}


def snapshot() -> dict[str, int]:
    """Packet counters of every rule in this network namespace."""
    rules = parse_iptables_save(_run(["iptables-save", "-c"]), "ip")
    rules.update(parse_iptables_save(_run(["ip6tables-save", "-c"]), "ip6"))
    for rule, packets in parse_nft_ruleset(_run(["nft", "list", "ruleset"])).items():
        table = rule[len("nft table "):].split(" chain ")[0]
        # iptables-nft keeps its rules in these tables: they are listed above already.
        if not (rules and table in IPTABLES_NFT_TABLES):
            rules[rule] = packets
    return rules


def moved_verdict_rules(before: dict[str, int], after: dict[str, int]) -> list[dict]:
    """Rules ending in DROP or REJECT whose counters moved, most packets first."""
    moved = []
    for rule, packets in after.items():
        grew = packets - before.get(rule, 0)
        verdict = next((v for v in VERDICTS if rule.rstrip().endswith(v) or f"-j {v}" in rule),
                       None)
        if grew > 0 and verdict:
            moved.append({"rule": rule, "packets": grew, "verdict": verdict.upper()})
    return sorted(moved, key=lambda r: -r["packets"])


def delete_command(rule: str) -> str:
    """The command that removes an iptables rule (nft: by its handle)."""
    if rule.startswith(("iptables ", "ip6tables ")):
        return rule.replace(" -A ", " -D ", 1)
    return "nft -a list ruleset (find the rule's handle), then nft delete rule ... handle N"
