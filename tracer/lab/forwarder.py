"""A naive user-space IPv4 router, for the lab's checksum incident.

It forwards frames between interfaces with AF_PACKET the way some appliances and
user-space data planes do: it decrements the TTL and fixes the IP header
checksum, but copies TCP and UDP segments exactly as it received them. A sender
with transmit checksum offload hands it segments whose checksum field holds only
the pseudo-header sum (the NIC was to finish it); forwarded as they are, they
reach the next host with a wrong checksum. Nothing here is pktfate's tracer.

Run inside the router's namespace:
  python3 -m pktfate.lab.forwarder --link eth-c,10.0.1.0/24,02:00:0a:00:01:02 \\
      --link eth-s,10.0.2.0/24,02:00:0a:00:02:02 [--ready-file PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import select
import signal
import socket
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
PACKET_HOST = 0


def ip_header_checksum(header: bytes) -> int:
    """RFC 791 header checksum of `header` with its checksum field zeroed."""
    data = header[:10] + b"\0\0" + header[12:]
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def forward_ipv4(packet: bytes, fix_ip_checksum: bool = True) -> bytes | None:
    """The IP packet as this router sends it on: TTL - 1, header checksum redone
    (unless told to leave it, the bug of an even more naive forwarder), payload
    untouched. None when the TTL runs out."""
    ihl = (packet[0] & 0x0F) * 4
    ttl = packet[8]
    if ttl <= 1 or ihl < 20 or len(packet) < ihl:
        return None
    header = bytearray(packet[:ihl])
    header[8] = ttl - 1
    if fix_ip_checksum:
        struct.pack_into("!H", header, 10, ip_header_checksum(bytes(header)))
    return bytes(header) + packet[ihl:]


@dataclass
class Link:
    ifname: str
    subnet: ipaddress.IPv4Network | ipaddress.IPv6Network
    neighbor_mac: bytes
    sock: socket.socket = field(init=False)
    mac: bytes = b""

    @classmethod
    def parse(cls, text: str) -> Link:
        ifname, subnet, mac = text.split(",")
        return cls(ifname, ipaddress.ip_network(subnet), bytes.fromhex(mac.replace(":", "")))

    def open(self) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind((self.ifname, ETH_P_ALL))
        self.mac = self.sock.getsockname()[4]


def run(links: list[Link], ready_file: Path | None, fix_ip_checksum: bool = True) -> None:
    for link in links:
        link.open()
    by_fd = {link.sock.fileno(): link for link in links}
    if ready_file:
        ready_file.write_text("ready\n")
    while True:
        readable, _, _ = select.select(list(by_fd), [], [])
        for fd in readable:
            frame, addr = by_fd[fd].sock.recvfrom(65535)
            if addr[2] != PACKET_HOST or len(frame) < 34:
                continue  # our own transmissions, broadcasts (ARP is the kernel's job)
            if struct.unpack("!H", frame[12:14])[0] != ETH_P_IP:
                continue
            dst = ipaddress.ip_address(frame[30:34])
            out = next((lk for lk in links if dst in lk.subnet), None)
            if out is None or out is by_fd[fd]:
                continue
            packet = forward_ipv4(frame[14:], fix_ip_checksum)
            if packet is not None:
                out.sock.send(out.neighbor_mac + out.mac + frame[12:14] + packet)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--link", action="append", required=True,
                        help="IFNAME,SUBNET,NEIGHBOR_MAC (repeat per interface)")
    parser.add_argument("--ready-file", type=Path)
    parser.add_argument("--stale-ip-checksum", action="store_true",
                        help="decrement the TTL but leave the IP header checksum as it was")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt):
        run([Link.parse(text) for text in args.link], args.ready_file,
            fix_ip_checksum=not args.stale_ip_checksum)


if __name__ == "__main__":
    main()
