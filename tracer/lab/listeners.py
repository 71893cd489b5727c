"""Listeners for the lab's socket-level incidents, run on the server:

  python -m pktfate.lab.listeners md5 --port 80 --peer 10.0.1.2 --key secret
      a TCP listener that requires a TCP MD5 signature from PEER (BGP-style)
  python -m pktfate.lab.listeners filtered --port 80
      a TCP listener with a classic BPF socket filter that refuses everything

Both accept and close connections that do get through; they run until killed.
"""

from __future__ import annotations

import argparse
import ctypes
import socket
import struct

TCP_MD5SIG = 14  # include/uapi/linux/tcp.h
TCP_MD5SIG_MAXKEYLEN = 80
SOCKADDR_STORAGE = 128
SO_ATTACH_FILTER = 26  # include/uapi/asm-generic/socket.h
BPF_RET_K = 0x06  # BPF_RET | BPF_K: return the constant (0: take no bytes, drop)


def md5sig(peer: str, key: bytes) -> bytes:
    """struct tcp_md5sig for an IPv4 or IPv6 peer."""
    if ":" in peer:
        addr = struct.pack("=HHI16sI", socket.AF_INET6, 0, 0, socket.inet_pton(
            socket.AF_INET6, peer), 0)
    else:
        addr = struct.pack("=HH4s", socket.AF_INET, 0, socket.inet_aton(peer))
    addr = addr.ljust(SOCKADDR_STORAGE, b"\0")
    return addr + struct.pack("=BBHI", 0, 0, len(key), 0) + \
        key.ljust(TCP_MD5SIG_MAXKEYLEN, b"\0")


def listener(port: int, family: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    return sock


def attach_drop_all(sock: socket.socket) -> ctypes.Array:
    """A one-instruction classic BPF filter, 'ret #0': the socket takes nothing.
    Returns the program's buffer, which must live as long as the call."""
    program = ctypes.create_string_buffer(struct.pack("=HBBI", BPF_RET_K, 0, 0, 0))
    fprog = struct.pack("=HxxxxxxQ", 1, ctypes.addressof(program))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    return program


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m pktfate.lab.listeners")
    parser.add_argument("kind", choices=("md5", "filtered"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--peer", default="")
    parser.add_argument("--key", default="pktfate-lab")
    parser.add_argument("--ipv6", action="store_true")
    args = parser.parse_args()
    sock = listener(args.port, socket.AF_INET6 if args.ipv6 else socket.AF_INET)
    keep = None
    if args.kind == "md5":
        sock.setsockopt(socket.IPPROTO_TCP, TCP_MD5SIG, md5sig(args.peer, args.key.encode()))
    else:
        keep = attach_drop_all(sock)
    sock.listen(16)
    while True:
        conn, _ = sock.accept()
        conn.close()
    del keep


if __name__ == "__main__":
    main()
