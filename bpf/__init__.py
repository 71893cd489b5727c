"""The BPF C sources, installed as package data of pktfate (pktfate.bpf)."""
