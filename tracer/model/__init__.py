"""pktfate's vocabulary, typed: what every room says about packets and hosts, as
enums, flags and records rather than text. The kernel's numbers come in through
the decoder and the recorded JSON through the recording reader; text is made only
at the edge (output/, and the diagnosis's own sentences), from the names these
modules declare once for the JSON contract. This room imports nothing of
pktfate's: every other room may import it."""
