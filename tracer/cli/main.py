"""The command line: click only. Everything it does is delegated."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, TextIO

import click

from .. import __version__
from ..config import PROTOCOLS, WatchConfig
from ..errors import PktfateError
from .lab import lab
from .options import (
    DURATION,
    HOST,
    PORT,
    ListenType,
    NewFileType,
    ProbePortType,
    RecordingType,
    json_option,
)


class OutputClosed(Exception):
    """The reader of pktfate's output went away."""


def _print_version(ctx, _param, value) -> None:
    """pktfate's version, and what this machine offers it: kernel, bcc, BTF."""
    if not value or ctx.resilient_parsing:
        return
    from ..kernel.discovery import environment

    click.echo(f"pktfate {__version__}")
    for name, text in environment().items():
        click.echo(f"  {name}: {text}")
    ctx.exit()


WATCH_HELP = """Show every watched packet's fate on this host, then explain.

\b
Examples:
  sudo pktfate watch --port 80
  sudo pktfate watch --port 53 --proto udp --duration 30
  sudo pktfate watch --port 443 --host 10.0.1.2 --iface eth0 --json > run.jsonl
  sudo ip netns exec web pktfate watch --port 80   (inside a network namespace)
"""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version, help="Show the version, the kernel, bcc and BTF.")
def cli() -> None:
    """pktfate: follow packets to their fate in the kernel, and say why a host
    ignores them."""


@cli.command(help=WATCH_HELP)
@click.option("--port", "ports", type=PORT, multiple=True, help="Watch this TCP/UDP port.")
@click.option("--host", "hosts", type=HOST, multiple=True, help="Only packets to or from ADDR.")
@click.option("--proto", "protos", type=click.Choice(PROTOCOLS), multiple=True,
              help="Only this protocol (ICMP with the watched peers is always followed).")
@click.option("--iface", "ifaces", multiple=True, metavar="NAME",
              help="Attach XDP and tc here (default: every interface that is up, but lo).")
@click.option("--duration", type=DURATION, help="Stop after SECONDS (default: at Ctrl-C).")
@click.option("--ready-file", type=NewFileType(),
              help="Create this file once every hook is attached.")
@click.option("--all-netns", is_flag=True, help="Kernel events from every network namespace.")
@click.option("--no-xdp", is_flag=True, help="Do not attach XDP programs.")
@click.option("--xdp-generic", is_flag=True,
              help="Attach generic XDP too, where an interface has no native XDP (and on "
              "veths), beside tc ingress: it sees the same packets, at a copy per packet.")
@click.option("--no-tc", is_flag=True, help="Do not attach tc filters.")
@click.option("--no-links", is_flag=True,
              help="Attach XDP and tc through netlink (clsact) even where the kernel has BPF "
              "links; they then outlive a killed pktfate until 'pktfate cleanup'. "
              "skb:kfree_skb then uses its regular tracepoint, not the raw one.")
@click.option("--no-track", is_flag=True,
              help="Do not follow matched packets by their skb after NAT rewrites them.")
@click.option("--all-events", "show_all", is_flag=True,
              help="Print every event, not only the noteworthy ones.")
@click.option("--sample-after", type=click.IntRange(0), default=2000, show_default=True,
              metavar="N", help="Past N events of one flow, hook and reason, send only 1 "
              "packet in --sample-every (0: send every event). Counts stay exact.")
@click.option("--sample-every", type=click.IntRange(1, 65535), default=64, show_default=True,
              metavar="N")
@click.option("--pcap", type=NewFileType(allow_dash=True), metavar="FILE",
              help="Also write every watched packet, its fate in its comment, to a pcapng "
              "file for Wireshark ('-': standard output, the report then on standard "
              "error).")
@click.option("--snaplen", type=click.IntRange(1, 64), default=64, show_default=True,
              metavar="N", help="Transport-header bytes kept per packet in --pcap.")
@click.option("--dump-bpf", is_flag=True, hidden=True,
              help="Print the final BPF C source and compile flags, then exit.")
@json_option
def watch(ports, hosts, protos, ifaces, duration, ready_file, all_netns, no_xdp, xdp_generic,
          no_tc, no_links, no_track, show_all, sample_after, sample_every, pcap, snaplen,
          dump_bpf, json_out) -> None:
    if no_xdp and xdp_generic:
        raise click.UsageError("--xdp-generic and --no-xdp: choose one")
    config = WatchConfig(
        ports=tuple(dict.fromkeys(ports)), hosts=tuple(dict.fromkeys(hosts)),
        protos=frozenset(protos or PROTOCOLS), ifaces=tuple(dict.fromkeys(ifaces)),
        duration=duration, json=json_out, ready_file=ready_file, all_netns=all_netns,
        xdp=not no_xdp, xdp_generic=xdp_generic, tc=not no_tc, links=not no_links,
        track=not no_track, show_all=show_all,
        sample_after=sample_after, sample_every=sample_every,
        pcap=str(pcap) if pcap is not None else None, snaplen=snaplen)
    if dump_bpf:
        from ..attach.source import compile_flags, render_source
        from ..kernel.discovery import probe_kernel

        flags = compile_flags(config.cflags(probe_kernel(mount_tracefs=False)))
        click.echo(render_source())
        click.echo("/* flags: " + " ".join(flags) + " */")
        return
    from ..watch import run_watch

    to_stdout = config.pcap == "-"
    stream = _event_stream(sys.stderr if to_stdout else sys.stdout)
    try:
        with _pcap_stream(config.pcap) as capture:
            code = run_watch(config, stream, capture)
        stream.flush()
    except BrokenPipeError as exc:
        # click would swallow an EPIPE silently; say what happened instead.
        raise OutputClosed() from exc
    sys.exit(code)


AGENT_HELP = """Always on: count every drop and every RST or ICMP error this host sends,
per namespace, for Prometheus; and when a --watch-port fails past the
threshold, record a deep watch there and log its diagnosis.

\b
Examples:
  sudo pktfate agent                                    (metrics on 127.0.0.1:9542)
  sudo pktfate agent --watch-port 80 --listen 0.0.0.0:9542
  sudo pktfate explain /var/lib/pktfate/incidents/incident-*.jsonl
"""


@cli.command(help=AGENT_HELP)
@click.option("--listen", type=ListenType(), default="127.0.0.1:9542", show_default=True,
              help="Serve /metrics here.")
@click.option("--watch-port", "ports", type=PORT, multiple=True,
              help="Arm a deep watch on this port when it fails; again for more.")
@click.option("--threshold", type=click.IntRange(1), default=10, show_default=True, metavar="N",
              help="Failures (packets dropped, RSTs and ICMP errors refusing them) that arm "
                   "a watch.")
@click.option("--window", type=DURATION, default=30.0, show_default=True,
              help="...within this many seconds.")
@click.option("--watch-duration", type=DURATION, default=20.0, show_default=True,
              help="How long an armed watch records.")
@click.option("--cooldown", type=DURATION, default=300.0, show_default=True,
              help="Seconds before one namespace and port arm again.")
@click.option("--max-per-hour", type=click.IntRange(1), default=6, show_default=True,
              metavar="N", help="Incidents recorded per hour, all ports together.")
@click.option("--incidents", "incident_dir",
              type=click.Path(file_okay=False, readable=False, path_type=Path),
              default="/var/lib/pktfate/incidents", show_default=True,
              help="Where the armed watches' recordings go.")
@click.option("--keep", type=click.IntRange(1), default=20, show_default=True, metavar="N",
              help="Recordings kept (the oldest go first).")
@click.option("--max-disk", type=click.IntRange(1), default=200, show_default=True,
              metavar="MB", help="Megabytes the recordings may take in all.")
@click.option("--ready-file", type=NewFileType(),
              help="Create this file once the agent counts and serves.")
def agent(listen, ports, threshold, window, watch_duration, cooldown, max_per_hour,
          incident_dir, keep, max_disk, ready_file) -> None:
    from ..session import require_root

    require_root("agent", "BPF")  # before anything else is imported or made
    from ..agent.incidents import IncidentStore
    from ..agent.run import AgentConfig, run_agent
    from ..agent.trigger import TriggerPolicy

    megabytes = max_disk * 1024 * 1024
    config = AgentConfig(
        listen=listen, ports=tuple(dict.fromkeys(ports)),
        policy=TriggerPolicy(threshold, window, cooldown, max_per_hour),
        watch_duration=watch_duration,
        store=IncidentStore(incident_dir, keep, megabytes, min(megabytes, 50 * 1024 * 1024)),
        ready_file=ready_file)
    sys.exit(run_agent(config, sys.stdout))


PROBE_HELP = """From this host, find which device answers or blocks a port on the way to
HOST: TTL-limited probes per protocol, answers seen with BPF, and the origin of
each RST or ICMP error told from its TTL.

\b
Examples:
  sudo pktfate probe 10.0.2.2 --port 22/tcp --port 80/tcp --port 53/udp
  sudo pktfate probe 192.0.2.10 --port 53 --proto udp
  sudo pktfate probe 10.0.2.2 --port 443 --json | tail -1
"""


@cli.command(help=PROBE_HELP)
@click.argument("host", type=HOST)
@click.option("--port", "ports", type=ProbePortType(), multiple=True,
              help="Port to probe with TCP and UDP, or with one ('53/udp'); again for more.")
@click.option("--proto", "protos", type=click.Choice(["tcp", "udp", "icmp", "all"]),
              multiple=True, help="Probe with these protocols (default: all three).")
@click.option("--max-hops", type=click.IntRange(1, 63), default=30, show_default=True,
              metavar="N", help="The highest TTL the TTL-limited probes use.")
@click.option("--wait", type=DURATION, default=1.0, show_default=True,
              help="Seconds a round of probes waits for answers.")
@json_option
def probe(host, ports, protos, max_hops, wait, json_out) -> None:
    from ..probe.plan import PROBE_PROTOCOLS, ProbeConfig

    protos = PROBE_PROTOCOLS if not protos or "all" in protos else tuple(protos)
    if not ports and set(protos) & {"tcp", "udp"}:
        raise click.UsageError("give the port to probe: --port N (or --proto icmp)")
    config = ProbeConfig(host, tuple(dict.fromkeys(ports)), protos, max_hops, wait, json_out)
    from ..probe.run import run_probe

    sys.exit(run_probe(config, sys.stdout))


@cli.command()
@click.argument("recordings", type=RecordingType(), nargs=-1, required=True)
@json_option
def explain(recordings, json_out) -> None:
    """Diagnose again from a recorded 'pktfate watch --json' output (no root needed).
    With several recordings (one per host: client, router, server), merge them into
    the path each packet took and name the host on the way responsible.

    \b
    Examples:
      sudo pktfate watch --port 80 --duration 20 --json > run.jsonl
      pktfate explain run.jsonl
      pktfate explain client.jsonl router.jsonl server.jsonl
    """
    from ..watch import run_explain, run_explain_merged

    if len(recordings) == 1:
        sys.exit(run_explain(recordings[0], sys.stdout, json_out))
    sys.exit(run_explain_merged(_named(recordings), sys.stdout, json_out))


def _named(streams) -> list[tuple[str, BinaryIO]]:
    """Each recording with the name the merged story gives its host: the file's
    name without .jsonl or .json ('client.jsonl': client)."""
    named = []
    for stream in streams:
        name = getattr(stream, "name", "-")
        name = "standard input" if name in ("<stdin>", "-") else Path(name).name
        for suffix in (".jsonl", ".json"):
            name = name[:-len(suffix)] if name.endswith(suffix) else name
        named.append((name, stream))
    return named


@cli.command()
@click.argument("recordings", type=RecordingType(), nargs=-1, required=True)
@click.option("-o", "--output", "output", type=NewFileType(allow_dash=True), required=True,
              metavar="FILE.html", help="The page to write ('-': standard output).")
def report(recordings, output) -> None:
    """One self-contained HTML page from recordings of 'pktfate watch --json' (no root
    needed): the diagnosis, a ladder diagram per flow, events per second by fate,
    and what was read of the host. Opens offline, prints, reads on a phone.

    \b
    Example:
      sudo pktfate watch --port 80 --duration 20 --json > run.jsonl
      pktfate report run.jsonl -o run.html
    """
    from ..watch import run_report

    named = _named(recordings)
    if output == "-":
        sys.exit(run_report(named, sys.stdout))
    page = io.StringIO()
    code = run_report(named, page)
    try:
        Path(output).write_text(page.getvalue(), encoding="utf-8")
    except OSError as exc:
        raise PktfateError(f"cannot write {output}: {exc.strerror}") from exc
    sys.exit(code)


@cli.command()
@json_option
def reasons(json_out) -> None:
    """List the drop reasons this kernel knows, with their numbers."""
    import json

    from ..kernel.discovery import drop_reason_table, kernel_has_btf

    table = drop_reason_table()
    if not table and kernel_has_btf():
        _no_reasons(json_out)
        return
    if not table:
        raise PktfateError("cannot read this kernel's drop reasons: it has no BTF "
                           "(/sys/kernel/btf/vmlinux) and no tracefs with skb:kfree_skb's "
                           "format; mount tracefs: mount -t tracefs tracefs /sys/kernel/tracing")
    for code, name in sorted(table.items()):
        click.echo(json.dumps({"kind": "reason", "code": code, "name": name}) if json_out
                   else f"{code:>4}  {name}")


def _no_reasons(json_out: bool) -> None:
    """A kernel before 5.17: it has no drop reasons, which is a fact, not an error.
    Say so, and what pktfate names drops by instead."""
    import json
    import platform

    from ..watch import reasons_by_place

    release = platform.release()
    places = reasons_by_place()
    if json_out:
        click.echo(json.dumps({"kind": "no-reasons", "kernel": release, "locations": places}))
        return
    click.echo(f"This kernel ({release}) has no drop reasons: skb:kfree_skb carries none "
               "before Linux 5.17.\npktfate names its drops by the function that freed them, "
               "with the counters and its own\nchecks (each finding says it was inferred):")
    for func, reasons in places.items():
        click.echo(f"  {func:<22} {' or '.join(dict.fromkeys(reasons))}")


@cli.command()
def cleanup() -> None:
    """Remove XDP programs and tc filters that a killed pktfate left attached."""
    from ..attach.state import cleanup as do_cleanup

    done = do_cleanup()
    for line in done:
        click.echo(line)
    click.echo(f"cleanup: {len(done)} attachment(s) removed" if done else
               "cleanup: nothing of pktfate's was attached")


cli.add_command(lab)


EVENT_BUFFER = 1 << 20


def _event_stream(out: TextIO) -> TextIO:
    """`out` (stdout, or stderr when the capture takes stdout) with a 1 MiB buffer
    for the watch's lines. A flood writes thousands of them per drain of the ring
    buffer; the watch flushes after each drain, so nothing waits longer than with
    the 8 KiB default, which would cost a write system call every 25 lines. `out`
    itself where it is no file (tests)."""
    try:
        fd = out.fileno()
    except (AttributeError, OSError, ValueError):
        return out
    out.flush()
    raw = io.FileIO(fd, "w", closefd=False)
    return io.TextIOWrapper(io.BufferedWriter(raw, EVENT_BUFFER), encoding=out.encoding,
                            errors=out.errors)


@contextlib.contextmanager
def _pcap_stream(path: str | None) -> Iterator[BinaryIO | None]:
    """The binary stream --pcap names, buffered like the lines (flushed per drain),
    closed on every way out; None without --pcap."""
    if path is None:
        yield None
        return
    if path == "-":
        sys.stdout.flush()
        with io.BufferedWriter(io.FileIO(sys.stdout.fileno(), "w", closefd=False),
                               EVENT_BUFFER) as stdout:
            yield stdout
        return
    try:
        capture = open(path, "wb", buffering=EVENT_BUFFER)  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise PktfateError(f"cannot write {path}: {exc.strerror}") from exc
    with capture:
        yield capture


def main(args: list[str] | None = None) -> None:
    try:
        cli.main(args, prog_name="pktfate", standalone_mode=False)
    except PktfateError as exc:
        click.echo(f"pktfate: error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        sys.exit(130)
    except OutputClosed:
        # The reader went away (`pktfate watch | head`): everything is detached
        # by now; say so where it can still be read.
        # No flush of the dead pipe at exit, from stdout or the watch's own stream
        # (_event_stream): what they still hold goes nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        sys.stdout = None
        click.echo("pktfate: output closed; stopped and detached", err=True)
        sys.exit(1)
    except click.UsageError as exc:
        # One line, as for every expected failure; --help has the long story.
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        click.echo(f"pktfate: error: {exc.format_message()}{hint}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"pktfate: error: {exc.format_message()}", err=True)
        sys.exit(2)
    except SystemExit as exc:
        sys.exit(exc.code)
