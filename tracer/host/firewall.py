"""Which firewall rule dropped the packets: rule counters that moved during the
watch, read without changing the firewall (iptables-save -c, nft list ruleset)."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

from ..model.protocols import PROTO_NAMES

R = TypeVar("R")

VERDICTS = ("DROP", "REJECT", "drop", "reject")
_IPT_RULE = re.compile(r"^\[(\d+):(\d+)\] (-A \S+ .*)$")
# A built-in chain's policy and the packets it decided: ':INPUT DROP [12:720]'.
_IPT_POLICY = re.compile(r"^:(\S+) (ACCEPT|DROP) \[(\d+):\d+\]$")
_NFT_COUNTER = re.compile(r"\s*counter packets (\d+) bytes \d+")
_NFT_HANDLE = re.compile(r"\s*# handle \d+$")


def parse_iptables_save(text: str, family: str = "ip") -> dict[str, int]:
    """'iptables -t TABLE -A CHAIN ...' -> packets, for each rule of `iptables-save -c`;
    a built-in chain's policy as 'iptables -t TABLE -P CHAIN DROP', with the packets
    no rule of the chain decided (what a default-deny firewall drops)."""
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
            continue
        policy = _IPT_POLICY.match(line)
        if policy:
            chain, verdict, packets = policy.groups()
            rules[f"{tool} -t {table} -P {chain} {verdict}"] = int(packets)
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


# ---------------------------------------------------------------- which packets a rule covers
#
# A rule's counter moving during a watch or a probe says it matched something, not
# what: with several rules moving, each finding must name the one whose own match
# covers its packets. Both iptables' and nft's words are read; what cannot be read
# (named sets, a port given by name) leaves the answer open rather than guessed.

_NFT_PORT_PROTOS = ("tcp", "udp", "sctp", "udplite", "dccp", "th")
# A rule's protocol by number or another name -> pktfate's name (model/protocols.py).
_PROTO_ALIASES = {**{str(int(proto)): name for proto, name in PROTO_NAMES.items()},
                  "ipv6-icmp": "icmpv6", "icmp6": "icmpv6", "all": "", "0": ""}


def _nft_value(words: list[str], i: int) -> tuple[str, int]:
    """The value at words[i] ('!=' folded in as a leading '!', a '{ a, b }' set
    joined with commas); returns it and the index after it."""
    negated = ""
    if i < len(words) and words[i] in ("!=", "=="):
        negated, i = ("!" if words[i] == "!=" else ""), i + 1
    if i < len(words) and words[i] == "{":
        end = words.index("}", i) if "}" in words[i:] else len(words)
        items = [w.rstrip(",") for w in words[i + 1:end] if w.rstrip(",")]
        return negated + ",".join(items), end + 1
    return (negated + words[i].strip('"'), i + 1) if i < len(words) else ("", i)


def nft_rule_match(rule: str) -> dict[str, str]:
    """What an nft rule (as `nft list ruleset` prints it) matches: the same fields
    as rule_match. A selector pktfate cannot read from its words is marked
    'unreadable'."""
    words = rule.replace("{", " { ").replace("}", " } ").split()
    found: dict[str, str] = {}
    i = 0
    while i < len(words):
        word, nxt = words[i], words[i + 1] if i + 1 < len(words) else ""
        if word in _NFT_PORT_PROTOS and nxt in ("dport", "sport"):
            if word != "th":
                found.setdefault("proto", word)
            found[nxt], i = _nft_value(words, i + 2)
        elif word in ("ip", "ip6") and nxt in ("saddr", "daddr"):
            found["src" if nxt == "saddr" else "dst"], i = _nft_value(words, i + 2)
        elif (word, nxt) in (("ip", "protocol"), ("ip6", "nexthdr"), ("meta", "l4proto")):
            found["proto"], i = _nft_value(words, i + 2)
        elif word in ("icmp", "icmpv6") and nxt in ("type", "code"):
            found.setdefault("proto", word)
            i += 3
        elif word in ("iifname", "oifname", "iif", "oif"):
            found["iif" if word.startswith("i") else "oif"], i = _nft_value(words, i + 1)
        else:
            i += 1
    if any(v.lstrip("!").startswith("@") for v in found.values()):
        found["unreadable"] = "a named set"
    return found


def match_of(rule: str) -> tuple[int | None, dict[str, str]]:
    """The IP version a rule applies to (None: both, as nft's inet tables) and its match."""
    if rule.startswith(("iptables ", "ip6tables ")):
        match = rule_match(rule)
        words = rule.split()
        if "--match-set" in words:
            i = words.index("--match-set")
            negated = "!" if words[i - 1] == "!" else ""
            side = words[i + 2] if i + 2 < len(words) else ""
            if side in ("src", "dst"):  # one address of the packet, in a set of addresses
                match[f"set_{side}"] = negated + words[i + 1]
            else:
                match["unreadable"] = "an ipset"
        return (4 if rule.startswith("iptables ") else 6), match
    family = rule[len("nft table "):].split(" ", 1)[0] if rule.startswith("nft table ") else ""
    body = rule.split(": ", 1)[1] if ": " in rule else rule
    return {"ip": 4, "ip6": 6}.get(family), nft_rule_match(body)


def _proto_name(name: str) -> str:
    return _PROTO_ALIASES.get(name, name)


def _port_in(spec: str, port: int) -> bool | None:
    """Whether `port` is in an iptables or nft port spec: 80, 1000:2000, 1000-2000,
    80,443. None when the spec names a service rather than a number."""
    for part in spec.split(","):
        low, _, high = part.replace("-", ":").partition(":")
        if not (low.isdigit() and (not high or high.isdigit())):
            return None
        if int(low) <= port <= int(high or low):
            return True
    return False


def _addr_in(spec: str, addr: str) -> bool | None:
    try:
        return any(ipaddress.ip_address(addr) in ipaddress.ip_network(part, strict=False)
                   for part in spec.split(","))
    except ValueError:
        return None


def _iface_is(spec: str, iface: str) -> bool:
    return any(iface.startswith(part[:-1]) if part.endswith(("+", "*")) else iface == part
               for part in spec.split(","))


# A packet description's value for a field that may be anything (a flow merged over
# the ports of this host): whether a rule's match on it covers the packet is unknown.
ANY = "any"


def _field_ok(name: str, spec: str, value) -> bool | None:
    if value == ANY:
        return None
    if name == "proto":
        return not _proto_name(spec) or _proto_name(spec) == value
    if name in ("sport", "dport"):
        return False if value is None else _port_in(spec, int(value))
    if name in ("src", "dst"):
        return _addr_in(spec, value)
    return _iface_is(spec, value)


_CHAIN_DIRECTIONS = {"input": "in", "prerouting": "in", "output": "out", "postrouting": "out"}


def chain_of(rule: str) -> str:
    """The chain a rule is in ('' when unknown)."""
    if rule.startswith("nft table "):
        return rule.split(" chain ", 1)[1].split(":", 1)[0] if " chain " in rule else ""
    words = rule.split()
    for verb in ("-A", "-P"):  # a rule, or the chain's policy
        if verb in words[:-1]:
            return words[words.index(verb) + 1]
    return ""


def is_policy(rule: str) -> bool:
    """Whether it is a chain's policy ('iptables -t filter -P INPUT DROP')."""
    return " -P " in rule


def covers(rule: str, packet: dict) -> bool | None:
    """Whether a rule's own match covers a packet: {family, direction ("in" to this
    host, "out" from it), proto, src, dst, sport, dport, iif, oif}, any of which may
    be missing. A rule in a chain that only sees the other direction (INPUT, OUTPUT,
    PREROUTING, POSTROUTING; nft chains named so) does not cover it. None when it
    cannot be told: the rule matches on something the description lacks, or on a set."""
    return _covers(_parsed(rule), packet)


def _parsed(rule: str) -> tuple[int | None, str | None, dict[str, str]]:
    """(IP version, direction of its chain, match): a rule read once for many packets."""
    family, match = match_of(rule)
    return family, _CHAIN_DIRECTIONS.get(chain_of(rule).lower()), match


def _covers(parsed: tuple[int | None, str | None, dict[str, str]], packet: dict,
            sets: Mapping[str, Sequence[str]] | None = None) -> bool | None:
    family, direction, match = parsed
    if family and packet.get("family") and family != packet["family"]:
        return False
    if direction and packet.get("direction") and direction != packet["direction"]:
        return False
    unknown = "unreadable" in match
    for side in ("src", "dst"):
        spec = match.get(f"set_{side}")
        if spec is None:
            continue
        negated, name = spec.startswith("!"), spec.lstrip("!")
        if sets is None or name not in sets or packet.get(side) is None:
            unknown = True
        elif (set_entry(sets[name], packet[side]) is not None) == negated:
            return False
    for name in ("proto", "sport", "dport", "src", "dst", "iif", "oif"):
        if name not in match:
            continue
        spec = match[name]
        negated, spec = spec.startswith("!"), spec.lstrip("!")
        if name not in ("proto", "sport", "dport") and packet.get(name) is None:
            unknown = True
            continue
        ok = _field_ok(name, spec, packet.get(name))
        if ok is None:
            unknown = True
        elif ok == negated:
            return False
    return None if unknown else True


def set_entry(entries: Sequence[str], addr: str) -> str | None:
    """The entry of an ipset (addresses and networks, as `ipset save` lists them)
    that holds `addr`, or None."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return None
    for entry in entries:
        try:
            if ip in ipaddress.ip_network(entry.split(",")[0], strict=False):
                return entry
        except ValueError:
            continue
    return None


MAX_SET_ENTRIES = 65536  # read of one set at most: a ban list can be large


def ipsets(rules: Iterable[str]) -> dict[str, list[str]]:
    """The entries of the ipsets these rules match on (`ipset save NAME`), read only."""
    names = sorted({words[words.index("--match-set") + 1] for words in map(str.split, rules)
                    if "--match-set" in words[:-1]})
    found: dict[str, list[str]] = {}
    for name in names:
        entries = [line.split()[2] for line in _run(["ipset", "save", name]).splitlines()
                   if line.startswith(f"add {name} ") and len(line.split()) > 2]
        found[name] = entries[:MAX_SET_ENTRIES]
    return found


def attribute(rules: Iterable[R], packets: list[dict], text: Callable[[R], str],
              sets: Mapping[str, Sequence[str]] | None = None) -> tuple[list[R], list[R]]:
    """The rules (of those whose counters moved) that cover any of `packets`, and
    those that might: ([certain], [cannot tell]). `text` gives a rule's own text;
    `sets`, the ipsets' entries, by name, that rules match addresses against."""
    mine: list[R] = []
    unclear: list[R] = []
    for rule in rules:
        parsed = _parsed(text(rule))
        verdicts = [_covers(parsed, packet, sets) for packet in packets]
        if True in verdicts:
            mine.append(rule)
        elif None in verdicts:
            unclear.append(rule)
    return mine, unclear
