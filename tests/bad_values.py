"""One bad value for every option and argument of every command: the unit test
runs the ones the command line itself refuses, the integration test all of them
(as root, in a lab namespace, checking that nothing stays attached). A test holds
this table complete against the CLI, so a new option cannot be added without one.
"""

from __future__ import annotations

from dataclasses import dataclass

NONEXISTENT_DIR = "/nonexistent-pktfate-dir"


@dataclass(frozen=True)
class Bad:
    command: str  # "watch", "lab demo", ...
    param: str  # the option's long name or the argument's name
    args: tuple[str, ...]  # the whole command line after 'pktfate'
    words: str  # in the one-line error
    runtime: bool = False  # refused only when the command runs (needs root)


BAD_VALUES = (
    Bad("watch", "--port", ("watch", "--port", "0"), "0 is not a port"),
    Bad("watch", "--host", ("watch", "--host", "10.0.0.300"), "is not an IPv4 or IPv6"),
    Bad("watch", "--proto", ("watch", "--proto", "sctp"), "sctp"),
    Bad("watch", "--iface", ("watch", "--iface", "nosuch0"), "no interface named nosuch0",
        runtime=True),
    Bad("watch", "--duration", ("watch", "--duration", "-1"), "must be positive"),
    Bad("watch", "--ready-file", ("watch", "--ready-file", f"{NONEXISTENT_DIR}/f"),
        "does not exist"),
    Bad("watch", "--all-netns", ("watch", "--all-netns=yes"), "does not take a value"),
    Bad("watch", "--no-xdp", ("watch", "--no-xdp=1"), "does not take a value"),
    Bad("watch", "--xdp-generic", ("watch", "--xdp-generic", "--no-xdp"), "choose one"),
    Bad("watch", "--no-tc", ("watch", "--no-tc=1"), "does not take a value"),
    Bad("watch", "--no-links", ("watch", "--no-links=1"), "does not take a value"),
    Bad("watch", "--no-track", ("watch", "--no-track=1"), "does not take a value"),
    Bad("watch", "--all-events", ("watch", "--all-events=1"), "does not take a value"),
    Bad("watch", "--sample-after", ("watch", "--sample-after", "-1"), "--sample-after"),
    Bad("watch", "--sample-every", ("watch", "--sample-every", "0"), "--sample-every"),
    Bad("watch", "--pcap", ("watch", "--pcap", f"{NONEXISTENT_DIR}/run.pcapng"),
        "does not exist"),
    Bad("watch", "--snaplen", ("watch", "--snaplen", "65"), "--snaplen"),
    Bad("watch", "--dump-bpf", ("watch", "--dump-bpf=1"), "does not take a value"),
    Bad("watch", "--json", ("watch", "--json=1"), "does not take a value"),
    Bad("probe", "host", ("probe", "example.org", "--port", "80"), "is not an IPv4 or IPv6"),
    Bad("probe", "--port", ("probe", "10.0.2.2", "--port", "53/sctp"),
        "the protocol after '/' is tcp or udp"),
    Bad("probe", "--proto", ("probe", "10.0.2.2", "--proto", "sctp"), "sctp"),
    Bad("probe", "--max-hops", ("probe", "10.0.2.2", "--port", "80", "--max-hops", "0"),
        "--max-hops"),
    Bad("probe", "--wait", ("probe", "10.0.2.2", "--port", "80", "--wait", "0"),
        "must be positive"),
    Bad("probe", "--json", ("probe", "10.0.2.2", "--json=1"), "does not take a value"),
    Bad("explain", "recordings", ("explain", f"{NONEXISTENT_DIR}/run.jsonl"), "No such file"),
    Bad("explain", "--json", ("explain", "--json=1", "-"), "does not take a value"),
    Bad("report", "recordings", ("report", f"{NONEXISTENT_DIR}/run.jsonl", "-o", "/tmp/r.html"),
        "No such file"),
    Bad("report", "--output", ("report", "-", "-o", f"{NONEXISTENT_DIR}/r.html"),
        "does not exist"),
    Bad("agent", "--listen", ("agent", "--listen", "localhost:9542"), "is not an IPv4 or IPv6"),
    Bad("agent", "--watch-port", ("agent", "--watch-port", "70000"), "70000 is not a port"),
    Bad("agent", "--threshold", ("agent", "--threshold", "0"), "--threshold"),
    Bad("agent", "--window", ("agent", "--window", "0"), "must be positive"),
    Bad("agent", "--watch-duration", ("agent", "--watch-duration", "-5"), "must be positive"),
    Bad("agent", "--cooldown", ("agent", "--cooldown", "soon"), "is not a number of seconds"),
    Bad("agent", "--max-per-hour", ("agent", "--max-per-hour", "0"), "--max-per-hour"),
    Bad("agent", "--incidents", ("agent", "--watch-port", "80", "--incidents", "/proc/version"),
        "is a file"),
    Bad("agent", "--keep", ("agent", "--keep", "0"), "--keep"),
    Bad("agent", "--max-disk", ("agent", "--max-disk", "0"), "--max-disk"),
    Bad("agent", "--ready-file", ("agent", "--ready-file", f"{NONEXISTENT_DIR}/f"),
        "does not exist"),
    Bad("reasons", "--json", ("reasons", "--json=1"), "does not take a value"),
    Bad("cleanup", "(arguments)", ("cleanup", "everything"), "unexpected extra argument"),
    Bad("lab up", "--scenario", ("lab", "up", "--scenario", "nonsense"), "nonsense"),
    Bad("lab up", "--prefix", ("lab", "up", "--prefix", "Bad/Prefix"), "lower-case"),
    Bad("lab down", "--prefix", ("lab", "down", "--prefix", "x" * 13), "lower-case"),
    Bad("lab demo", "scenario", ("lab", "demo", "nonsense"), "nonsense"),
    Bad("lab demo", "--prefix", ("lab", "demo", "--prefix", "9lives"), "lower-case"),
    Bad("lab demo", "--duration", ("lab", "demo", "--duration", "0"), "must be positive"),
    Bad("lab demo", "--keep", ("lab", "demo", "--keep=1"), "does not take a value"),
    Bad("lab demo", "--everywhere", ("lab", "demo", "--everywhere", "--keep"), "choose one"),
    Bad("lab demo", "--recordings", ("lab", "demo", "--recordings", f"{NONEXISTENT_DIR}/x"),
        "goes with --everywhere"),
    Bad("lab demo", "--json", ("lab", "demo", "--json=yes"), "does not take a value"),
    Bad("lab list", "(arguments)", ("lab", "list", "all"), "unexpected extra argument"),
    Bad("lab provision", "--router-mode", ("lab", "provision", "--router-mode", "fast"),
        "fast"),
    Bad("lab provision", "--expect-role", ("lab", "provision", "--expect-role", "boss"),
        "boss"),
    Bad("lab apply", "scenario", ("lab", "apply", "nonsense"), "nonsense"),
    Bad("lab apply", "--router-mode", ("lab", "apply", "checksum", "--router-mode", "fast"),
        "fast"),
    Bad("lab reset", "(arguments)", ("lab", "reset", "now"), "unexpected extra argument"),
    Bad("lab script", "scenario", ("lab", "script", "nonsense", "--host", "server"),
        "nonsense"),
    Bad("lab script", "--host", ("lab", "script", "checksum", "--host", "boss"), "boss"),
)


def cli_params(group, path: str = "") -> set[tuple[str, str]]:
    """(command path, parameter) for every option and argument of every command;
    commands without any are listed as '(arguments)': an extra argument is their
    bad value."""
    import click

    found: set[tuple[str, str]] = set()
    for name, command in group.commands.items():
        where = f"{path} {name}".strip()
        if isinstance(command, click.Group):
            found |= cli_params(command, where)
            continue
        params = [p for p in command.params if p.name != "help"]
        for param in params:
            if isinstance(param, click.Option):
                found.add((where, max(param.opts, key=len)))
            else:
                found.add((where, param.name))
        if not any(isinstance(p, click.Argument) for p in params) and \
                not any(isinstance(p, click.Option) for p in params):
            found.add((where, "(arguments)"))
    return found
