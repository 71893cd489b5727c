"""pktfate: follow packets to their fate in the kernel and explain it."""

__version__ = "0.1.0"
