"""The bench: measurements of pktfate against runs without it (sudo make bench)."""
