"""The command line: click only; everything it does is delegated."""

from .main import cli, main

__all__ = ["cli", "main"]
