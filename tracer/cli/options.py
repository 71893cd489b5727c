"""The command line's value types and shared options: every bad value is refused
here, in one line, before anything runs."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import click


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


class ListenType(click.ParamType):
    """ADDR:PORT to serve on; an IPv6 address in brackets ([::1]:9542)."""

    name = "ADDR:PORT"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        host, sep, port = str(value).rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
            self.fail(f"{value!r} is not ADDR:PORT (for example 127.0.0.1:9542)", param, ctx)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            self.fail(f"{host!r} is not an IPv4 or IPv6 address to listen on", param, ctx)
        return host, int(port)


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


class RecordingType(click.File):
    """A recording to read: a regular file, or '-' for standard input. A FIFO
    would wait for a writer and a device never end: both refused before opening."""

    def __init__(self) -> None:
        super().__init__("rb")

    def convert(self, value, param, ctx):
        import os
        import stat

        if value != "-" and isinstance(value, str):
            try:
                mode = os.stat(value).st_mode
            except OSError:
                mode = None  # click's own open says why
            if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
                self.fail(f"{value!r} is not a regular file: a recording is one "
                          "('pktfate watch --json > FILE')", param, ctx)
        return super().convert(value, param, ctx)


class NewFileType(click.ParamType):
    """A file pktfate will create: its directory must exist and be writable."""

    name = "PATH"

    def __init__(self, allow_dash: bool = False):
        self.allow_dash = allow_dash  # '-': standard output

    def convert(self, value, param, ctx):
        import os

        if self.allow_dash and value == "-":
            return value
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


json_option = click.option("--json", "json_out", is_flag=True,
                           help="One JSON object per line (fields: see the README).")
