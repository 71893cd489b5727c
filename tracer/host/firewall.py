"""Which firewall rule dropped the packets: rule counters that moved during the
watch, read without changing the firewall (iptables-save -c, nft list ruleset)."""

from __future__ import annotations

import contextlib
import json
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


# ---------------------------------------------------------------- rules by their match

_IPT_OPTIONS = {"-p": "proto", "--protocol": "proto", "--dport": "dport", "--sport": "sport",
                "--dports": "dport", "--sports": "sport", "-s": "src", "--source": "src",
                "-d": "dst", "--destination": "dst", "-i": "iif", "--in-interface": "iif",
                "-o": "oif", "--out-interface": "oif", "-j": "target",
                "--to-destination": "to", "--to-source": "to", "--to-ports": "to",
                "--icmp-type": "icmp_type", "--icmpv6-type": "icmp_type"}


def rule_match(rule: str) -> dict[str, str]:
    """What an iptables rule matches and does, from its own words: proto, sport,
    dport, src, dst, iif, oif, icmp_type, target and its `to` (NAT). Negated
    matches ('! -p tcp') are kept with a leading '!'."""
    words = rule.split()
    found: dict[str, str] = {}
    for i, word in enumerate(words[:-1]):
        name = _IPT_OPTIONS.get(word)
        if name and name not in found:
            negated = i > 0 and words[i - 1] == "!"
            found[name] = ("!" if negated else "") + words[i + 1]
    return found


NAT_TARGETS = ("DNAT", "REDIRECT", "SNAT", "MASQUERADE")


def parse_nat_rules(text: str, family: str = "ip") -> list[dict]:
    """The NAT rules of an `iptables-save -t nat` output, each with its match."""
    found = []
    for rule in parse_iptables_save(text, family):
        match = rule_match(rule)
        if match.get("target") in NAT_TARGETS:
            found.append({"rule": rule, **match})
    return found


def _nft_nat(ruleset: dict) -> list[dict]:
    """dnat/snat/redirect/masquerade rules of `nft -j list ruleset`, with the
    protocol and port they match."""
    found = []
    for item in ruleset.get("nftables", []):
        rule = item.get("rule")
        if not rule:
            continue
        match: dict[str, str] = {}
        for expr in rule.get("expr", []):
            left = expr.get("match", {}).get("left", {})
            payload = left.get("payload", {}) if isinstance(left, dict) else {}
            if payload.get("field") in ("dport", "sport") and \
                    isinstance(expr["match"].get("right"), int):
                match["proto"] = payload.get("protocol", "")
                match[payload["field"]] = str(expr["match"]["right"])
            for verb in ("dnat", "snat", "redirect", "masquerade"):
                if verb in expr:
                    spec = expr[verb] or {}
                    to = str(spec.get("addr", "")) + (f":{spec['port']}" if "port" in spec
                                                      else "")
                    match.update(target=verb.upper(), to=to.lstrip(":") if to else "")
        if "target" in match:
            found.append({"rule": f"nft table {rule.get('family')} {rule.get('table')} chain "
                                  f"{rule.get('chain')} handle {rule.get('handle')}", **match})
    return found


def nat_rules() -> list[dict]:
    """Every NAT rule of this namespace (iptables, ip6tables, nft), with its match."""
    rules = parse_nat_rules(_run(["iptables-save", "-c", "-t", "nat"]), "ip")
    rules += parse_nat_rules(_run(["ip6tables-save", "-c", "-t", "nat"]), "ip6")
    if not rules:  # iptables-nft shows its rules above; nft's own only when none
        with contextlib.suppress(ValueError):
            rules += _nft_nat(json.loads(_run(["nft", "-j", "list", "ruleset"]) or "{}"))
    return rules
