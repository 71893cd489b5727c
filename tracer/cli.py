"""The command line: click only. Everything it does is delegated."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

import click

from . import __version__
from .config import PROTOCOLS, WatchConfig
from .errors import PktfateError
from .scenarios import SCENARIOS


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


class NewFileType(click.ParamType):
    """A file pktfate will create: its directory must exist and be writable."""

    name = "PATH"

    def convert(self, value, param, ctx):
        import os

        path = Path(value)
        if path.is_dir():
            self.fail(f"{value!r} is a directory: name a file", param, ctx)
        parent = path.parent
        if not parent.is_dir():
            self.fail(f"the directory of {value!r} does not exist", param, ctx)
        if not os.access(parent, os.W_OK | os.X_OK):
            self.fail(f"cannot create files in {str(parent)!r}", param, ctx)
        return path


class PrefixType(click.ParamType):
    """The lab's name prefix: it goes into namespace and interface names (15
    characters at most for an interface, with 3 of the lab's own)."""

    name = "PREFIX"

    def convert(self, value, param, ctx):
        import re

        if not re.fullmatch(r"[a-z][a-z0-9]{0,11}", str(value)):
            self.fail(f"{value!r}: use 1 to 12 lower-case letters and digits, starting "
                      "with a letter", param, ctx)
        return value


PORT, HOST, DURATION = PortType(), HostType(), DurationType()


class OutputClosed(Exception):
    """The reader of pktfate's output went away."""
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
@click.option("--ready-file", type=NewFileType(),
              help="Create this file once every hook is attached.")
@click.option("--all-netns", is_flag=True, help="Kernel events from every network namespace.")
@click.option("--no-xdp", is_flag=True, help="Do not attach XDP programs.")
@click.option("--no-tc", is_flag=True, help="Do not attach tc filters.")
@click.option("--all-events", "show_all", is_flag=True,
              help="Print every event, not only the noteworthy ones.")
@click.option("--sample-after", type=click.IntRange(0), default=2000, show_default=True,
              metavar="N", help="Past N events of one flow, hook and reason, send only 1 "
              "packet in --sample-every (0: send every event). Counts stay exact.")
@click.option("--sample-every", type=click.IntRange(1, 65535), default=64, show_default=True,
              metavar="N")
@click.option("--dump-bpf", is_flag=True, hidden=True,
              help="Print the final BPF C source and compile flags, then exit.")
@json_option
def watch(ports, hosts, protos, ifaces, duration, ready_file, all_netns, no_xdp, no_tc,
          show_all, sample_after, sample_every, dump_bpf, json_out) -> None:
    config = WatchConfig(
        ports=tuple(dict.fromkeys(ports)), hosts=tuple(dict.fromkeys(hosts)),
        protos=frozenset(protos or PROTOCOLS), ifaces=tuple(dict.fromkeys(ifaces)),
        duration=duration, json=json_out, ready_file=ready_file, all_netns=all_netns,
        xdp=not no_xdp, tc=not no_tc, show_all=show_all, sample_after=sample_after,
        sample_every=sample_every)
    if dump_bpf:
        from .config import render_source
        from .kernel import probe_kernel

        click.echo(render_source())
        click.echo("/* flags: " + " ".join(config.cflags(probe_kernel(mount_tracefs=False)))
                   + " */")
        return
    from .watch import run_watch

    try:
        code = run_watch(config, sys.stdout)
    except BrokenPipeError as exc:
        # click would swallow an EPIPE silently; say what happened instead.
        raise OutputClosed() from exc
    sys.exit(code)


PROBE_HELP = """From this host, find which device answers or blocks a port on the way to
HOST: TTL-limited probes per protocol, answers seen with BPF, and the origin of
each RST or ICMP error told from its TTL.

\b
Examples:
  sudo pktfate probe 10.0.2.2 --port 22/tcp --port 80/tcp --port 53/udp
  sudo pktfate probe 192.0.2.10 --port 53 --proto udp
  sudo pktfate probe 10.0.2.2 --port 443 --json | tail -1
"""


class ProbePortType(PortType):
    """'80', or '53/udp' for one protocol only."""

    name = "PORT[/PROTO]"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        number, _, proto = str(value).partition("/")
        if proto and proto not in ("tcp", "udp"):
            self.fail(f"{value!r}: the protocol after '/' is tcp or udp", param, ctx)
        return super().convert(number, param, ctx), proto or None


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
    from .probe import PROBE_PROTOCOLS, ProbeConfig

    protos = PROBE_PROTOCOLS if not protos or "all" in protos else tuple(protos)
    if not ports and set(protos) & {"tcp", "udp"}:
        raise click.UsageError("give the port to probe: --port N (or --proto icmp)")
    config = ProbeConfig(host, tuple(dict.fromkeys(ports)), protos, max_hops, wait, json_out)
    from .prober import run_probe

    sys.exit(run_probe(config, sys.stdout))


@cli.command()
@click.argument("recording", type=click.File("rb"))
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

    from .kernel import drop_reason_table

    table = drop_reason_table()
    if not table:
        raise PktfateError("cannot read this kernel's drop reasons: it has neither BTF nor a "
                           "kfree_skb tracepoint with reasons (5.17 or newer)")
    for code, name in sorted(table.items()):
        click.echo(json.dumps({"kind": "reason", "code": code, "name": name}) if json_out
                   else f"{code:>4}  {name}")


@cli.command()
def cleanup() -> None:
    """Remove XDP programs and tc filters that a killed pktfate left attached."""
    from .loader import cleanup as do_cleanup

    done = do_cleanup()
    for line in done:
        click.echo(line)
    click.echo(f"cleanup: {len(done)} attachment(s) removed" if done else
               "cleanup: nothing of pktfate's was attached")


@cli.group()
def lab() -> None:
    """The namespace lab: client, router and server on this machine.

    \b
    Examples:
      sudo pktfate lab demo checksum      (build, watch, send traffic, diagnose)
      sudo pktfate lab up --scenario firewall-drop
      sudo ip netns exec pfl-server pktfate watch --port 80
      sudo ip netns exec pfl-client curl -m 3 http://10.0.2.2/
      sudo pktfate lab down
    """


scenario_argument = click.argument("scenario", type=click.Choice(sorted(SCENARIOS)),
                                   default="checksum")
prefix_option = click.option("--prefix", type=PrefixType(), default="pfl", show_default=True,
                             help="Prefix of the lab's namespace names.")


@lab.command("up")
@click.option("--scenario", type=click.Choice(sorted(SCENARIOS)), default="healthy",
              show_default=True)
@prefix_option
def lab_up(scenario, prefix) -> None:
    """Build the lab (again) with a scenario applied."""
    from .lab import Lab

    Lab(prefix).up(scenario)
    click.echo(f"lab up: {scenario}: {SCENARIOS[scenario].summary}")
    click.echo(f"namespaces {prefix}-client, {prefix}-router, {prefix}-server")


@lab.command("down")
@prefix_option
def lab_down(prefix) -> None:
    """Stop the lab's processes and delete its namespaces."""
    from .lab import Lab

    Lab(prefix).down()
    click.echo("lab down")


@lab.command("demo")
@scenario_argument
@prefix_option
@click.option("--duration", type=DURATION, default=8.0, show_default=True)
@click.option("--keep", is_flag=True, help="Leave the lab up afterwards.")
def lab_demo(scenario, prefix, duration, keep) -> None:
    """Build the lab with SCENARIO, watch :80 on the server while the client
    pings and curls it, and print pktfate's diagnosis."""
    from .lab import run_demo

    sys.exit(run_demo(scenario, prefix, duration, keep))


ROUTER_MODES = click.Choice(["kernel", "userspace"])


@lab.command("list")
def lab_list() -> None:
    """The scenarios, with where pktfate watches and what it should find."""
    import textwrap

    for name, sc in SCENARIOS.items():
        click.echo(f"{name}  (watch on the {sc.watch_host}: {sc.expect})")
        click.echo(textwrap.fill(sc.summary, 99, initial_indent="    ",
                                 subsequent_indent="    "))


@lab.command("provision")
@click.option("--router-mode", type=ROUTER_MODES, default="kernel", show_default=True,
              help="How the router forwards in scenarios that do not say.")
@click.option("--expect-role", type=click.Choice(["client", "router", "server"]),
              help="Fail unless this machine holds that role's addresses.")
def lab_provision(router_mode, expect_role) -> None:
    """On a machine of the Vagrant lab: add the lab's routes, record the baseline
    that 'lab reset' returns to."""
    from .hostlab import HostLab

    host = HostLab.here()
    if expect_role and host.role != expect_role:
        raise PktfateError(f"this machine holds the {host.role}'s addresses, not the "
                           f"{expect_role}'s: check the Vagrantfile's networks")
    host.provision(router_mode)
    click.echo(f"lab: provisioned as the {host.role} "
               f"({', '.join(f'{k}={v}' for k, v in host.interfaces.items() if v)})")


@lab.command("apply")
@scenario_argument
@click.option("--router-mode", type=ROUTER_MODES,
              help="Override the router's mode (default: the scenario's, else the baseline's).")
def lab_apply(scenario, router_mode) -> None:
    """On a machine of the Vagrant lab: reset, then apply this machine's part of
    SCENARIO (run it on the router, the server and the client)."""
    from .hostlab import HostLab

    host = HostLab.here()
    host.apply_scenario(scenario, router_mode)
    click.echo(f"lab: {scenario} applied on the {host.role}: {SCENARIOS[scenario].summary}")


@lab.command("reset")
def lab_reset() -> None:
    """On a machine of the Vagrant lab: back to the provisioned state."""
    from .hostlab import HostLab

    host = HostLab.here()
    host.reset()
    click.echo(f"lab: the {host.role} is back to its provisioned state")


@lab.command("script")
@scenario_argument
@click.option("--host", type=click.Choice(["client", "router", "server"]), required=True)
def lab_script(scenario, host) -> None:
    """Print the shell commands SCENARIO runs on HOST (for the Vagrant lab)."""
    sc = SCENARIOS[scenario]
    click.echo(f"# pktfate lab scenario {scenario} on {host}: router mode {sc.router}")
    for line in sc.commands("setup", host):
        click.echo(line)
    for line in sc.commands("services", host):
        click.echo(f"nohup {line} >/dev/null 2>&1 &")


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
        sys.stdout = None  # no flush of the dead pipe at exit
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
