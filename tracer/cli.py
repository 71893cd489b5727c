"""The command line: click only. Everything it does is delegated."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

import click

from . import __version__
from .config import PROTOCOLS, WatchConfig
from .errors import PktfateError


class PortType(click.ParamType):
    name = "PORT"

    def convert(self, value, param, ctx):
        try:
            port = int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a port number", param, ctx)
        if not 1 <= port <= 65535:
            self.fail(f"{port} is not a port: use 1 to 65535", param, ctx)
        return port


class HostType(click.ParamType):
    name = "ADDR"

    def convert(self, value, param, ctx):
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            self.fail(f"{value!r} is not an IPv4 or IPv6 address", param, ctx)


class DurationType(click.ParamType):
    name = "SECONDS"

    def convert(self, value, param, ctx):
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if seconds <= 0:
            self.fail("the duration must be positive", param, ctx)
        return seconds


PORT, HOST, DURATION = PortType(), HostType(), DurationType()
json_option = click.option("--json", "json_out", is_flag=True,
                           help="One JSON object per line (fields: see the README).")

WATCH_HELP = """Show every watched packet's fate on this host, then explain.

\b
Examples:
  sudo pktfate watch --port 80
  sudo pktfate watch --port 53 --proto udp --duration 30
  sudo pktfate watch --port 443 --host 10.0.1.2 --iface eth0 --json > run.jsonl
  sudo ip netns exec web pktfate watch --port 80   (inside a network namespace)
"""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pktfate")
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
@click.option("--ready-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Create this file once every hook is attached.")
@click.option("--all-netns", is_flag=True, help="Kernel events from every network namespace.")
@click.option("--no-xdp", is_flag=True, help="Do not attach XDP programs.")
@click.option("--no-tc", is_flag=True, help="Do not attach tc filters.")
@click.option("--all-events", "show_all", is_flag=True,
              help="Print every event, not only the noteworthy ones.")
@click.option("--dump-bpf", is_flag=True, hidden=True,
              help="Print the final BPF C source and compile flags, then exit.")
@json_option
def watch(ports, hosts, protos, ifaces, duration, ready_file, all_netns, no_xdp, no_tc,
          show_all, dump_bpf, json_out) -> None:
    config = WatchConfig(
        ports=tuple(dict.fromkeys(ports)), hosts=tuple(dict.fromkeys(hosts)),
        protos=frozenset(protos or PROTOCOLS), ifaces=tuple(dict.fromkeys(ifaces)),
        duration=duration, json=json_out, ready_file=ready_file, all_netns=all_netns,
        xdp=not no_xdp, tc=not no_tc, show_all=show_all)
    if dump_bpf:
        from .config import render_source
        from .kernel import probe_kernel

        click.echo(render_source())
        click.echo("/* flags: " + " ".join(config.cflags(probe_kernel(mount_tracefs=False)))
                   + " */")
        return
    from .watch import run_watch

    sys.exit(run_watch(config, sys.stdout))


@cli.command()
@click.argument("recording", type=click.File("r"))
@json_option
def explain(recording, json_out) -> None:
    """Diagnose again from a recorded 'pktfate watch --json' output (no root needed).

    \b
    Example:
      sudo pktfate watch --port 80 --duration 20 --json > run.jsonl
      pktfate explain run.jsonl
    """
    from .watch import run_explain

    sys.exit(run_explain(recording, sys.stdout, json_out))


@cli.command()
@json_option
def reasons(json_out) -> None:
    """List the drop reasons this kernel knows, with their numbers."""
    import json

    from .kernel import probe_kernel

    kernel = probe_kernel(mount_tracefs=False) if Path("/sys/kernel/tracing/events").is_dir() \
        else _kernel_without_tracefs()
    for code, name in sorted(kernel.items() if isinstance(kernel, dict) else
                             kernel.drop_reasons.items()):
        click.echo(json.dumps({"kind": "reason", "code": code, "name": name}) if json_out
                   else f"{code:>4}  {name}")


def _kernel_without_tracefs() -> dict[int, str]:
    from .btf import BTF, BTFError
    from .kernel import strip_enum_prefix

    try:
        return strip_enum_prefix(BTF.from_file().enum("skb_drop_reason"), "SKB_DROP_REASON_")
    except BTFError as exc:
        raise PktfateError(f"cannot read this kernel's drop reasons: {exc}") from exc


@cli.command()
def cleanup() -> None:
    """Remove XDP programs and tc filters that a killed pktfate left attached."""
    from .loader import cleanup as do_cleanup

    done = do_cleanup()
    for line in done:
        click.echo(line)
    click.echo(f"cleanup: {len(done)} attachment(s) removed" if done else
               "cleanup: nothing of pktfate's was attached")


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except PktfateError as exc:
        click.echo(f"pktfate: error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except SystemExit as exc:
        sys.exit(exc.code)
