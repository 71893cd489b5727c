"""`pktfate lab`: the namespace lab and the Vagrant lab's machines. The lab is not
part of the product: it is imported here, lazily, inside each command, and
nowhere else in the product."""

from __future__ import annotations

import sys
import textwrap

import click

from ..errors import PktfateError
from .options import DURATION, PrefixType, json_option


class ScenarioType(click.ParamType):
    """A lab scenario's name, checked against the lab's list when given."""

    name = "SCENARIO"

    def convert(self, value, param, ctx):
        from ..lab.scenarios import SCENARIOS

        if value not in SCENARIOS:
            self.fail(f"{value!r} is not a scenario: one of {', '.join(sorted(SCENARIOS))}",
                      param, ctx)
        return value


def _say(text: str, indent: str = "") -> None:
    """A line of the lab's own output, wrapped under 100 columns."""
    click.echo(textwrap.fill(text, 99, initial_indent=indent,
                             subsequent_indent=indent or "    "))


def _summary(scenario: str) -> str:
    from ..lab.scenarios import SCENARIOS

    return SCENARIOS[scenario].summary


@click.group()
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


scenario_argument = click.argument("scenario", type=ScenarioType(),
                                   default="checksum")
prefix_option = click.option("--prefix", type=PrefixType(), default="pfl", show_default=True,
                             help="Prefix of the lab's namespace names.")


@lab.command("up")
@click.option("--scenario", type=ScenarioType(), default="healthy",
              show_default=True)
@prefix_option
def lab_up(scenario, prefix) -> None:
    """Build the lab (again) with a scenario applied."""
    from ..lab.namespaces import Lab

    Lab(prefix).up(scenario)
    click.echo(f"lab up: {scenario}: {_summary(scenario)}")
    click.echo(f"namespaces {prefix}-client, {prefix}-router, {prefix}-server")


@lab.command("down")
@prefix_option
def lab_down(prefix) -> None:
    """Stop the lab's processes and delete its namespaces."""
    from ..lab.namespaces import Lab

    Lab(prefix).down()
    click.echo("lab down")


@lab.command("demo")
@scenario_argument
@prefix_option
@click.option("--duration", type=DURATION, default=8.0, show_default=True)
@click.option("--keep", is_flag=True, help="Leave the lab up afterwards.")
@click.option("--everywhere", is_flag=True,
              help="Watch in every namespace (client, router, server) and merge the "
              "recordings into each packet's path (not with --keep).")
@click.option("--recordings", type=click.Path(file_okay=False, writable=True), metavar="DIR",
              help="With --everywhere: keep each host's recording in DIR (HOST.jsonl).")
@json_option
def lab_demo(scenario, prefix, duration, keep, everywhere, recordings, json_out) -> None:
    """Build the lab with SCENARIO, watch :80 on the server while the client
    pings and curls it, and print pktfate's diagnosis (--json: the watch's JSON
    lines on stdout, the demo's commentary on stderr). With --everywhere, a watch
    in each namespace, merged into one path story."""
    if everywhere:
        if keep:
            raise click.UsageError("--everywhere and --keep: choose one")
        from ..lab.everywhere import run_everywhere

        sys.exit(run_everywhere(scenario, prefix, duration, recordings, json_out))
    if recordings:
        raise click.UsageError("--recordings goes with --everywhere")
    from ..lab.demo import run_demo

    sys.exit(run_demo(scenario, prefix, duration, keep, json_out=json_out))


ROUTER_MODES = click.Choice(["kernel", "userspace"])


@lab.command("list")
def lab_list() -> None:
    """The scenarios, with where pktfate watches and what it should find."""
    from ..lab.scenarios import SCENARIOS

    for name, sc in SCENARIOS.items():
        click.echo(f"{name}  (watch on the {sc.watch_host}: {sc.expect})")
        _say(sc.summary, indent="    ")


@lab.command("provision")
@click.option("--router-mode", type=ROUTER_MODES, default="kernel", show_default=True,
              help="How the router forwards in scenarios that do not say.")
@click.option("--expect-role", type=click.Choice(["client", "router", "server"]),
              help="Fail unless this machine holds that role's addresses.")
def lab_provision(router_mode, expect_role) -> None:
    """On a machine of the Vagrant lab: add the lab's routes, record the baseline
    that 'lab reset' returns to."""
    from ..lab.hostlab import HostLab

    host = HostLab.here()
    if expect_role and host.role != expect_role:
        raise PktfateError(f"this machine holds the {host.role}'s addresses, not the "
                           f"{expect_role}'s: check the Vagrantfile's networks")
    host.provision(router_mode)
    own = [f"{name}={iface}" for name, iface in host.interfaces.items()
           if iface and name.startswith(f"{host.role}_")]
    _say(f"lab: provisioned as the {host.role} ({', '.join(own)})")


@lab.command("apply")
@scenario_argument
@click.option("--router-mode", type=ROUTER_MODES,
              help="Override the router's mode (default: the scenario's, else the baseline's).")
def lab_apply(scenario, router_mode) -> None:
    """On a machine of the Vagrant lab: reset, then apply this machine's part of
    SCENARIO (run it on the router, the server and the client)."""
    from ..lab.hostlab import HostLab

    host = HostLab.here()
    host.apply_scenario(scenario, router_mode)
    _say(f"lab: {scenario} applied on the {host.role}: {_summary(scenario)}")


@lab.command("reset")
def lab_reset() -> None:
    """On a machine of the Vagrant lab: back to the provisioned state."""
    from ..lab.hostlab import HostLab

    host = HostLab.here()
    host.reset()
    click.echo(f"lab: the {host.role} is back to its provisioned state")


@lab.command("script")
@scenario_argument
@click.option("--host", type=click.Choice(["client", "router", "server"]), required=True)
def lab_script(scenario, host) -> None:
    """Print the shell commands SCENARIO runs on HOST (for the Vagrant lab)."""
    from ..lab.scenarios import SCENARIOS

    sc = SCENARIOS[scenario]
    click.echo(f"# pktfate lab scenario {scenario} on {host}: router mode {sc.router}")
    for line in sc.commands("setup", host):
        click.echo(line)
    for line in sc.commands("services", host):
        click.echo(f"nohup {line} >/dev/null 2>&1 &")


