"""Listeners for the lab's socket-level incidents, run on the server:

  python -m pktfate.lab.listeners md5 --port 80 --peer 10.0.1.2 --key secret
      a TCP listener that requires a TCP MD5 signature from PEER (BGP-style)
  python -m pktfate.lab.listeners filtered --port 80
      a TCP listener with a classic BPF socket filter that refuses everything
  python -m pktfate.lab.listeners cgroup-filtered --port 80
      a TCP listener in a cgroup of its own whose ingress BPF program refuses
      everything, the way systemd's IPAddressDeny= does for a unit

Both accept and close connections that do get through; they run until killed.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import socket
import struct
from pathlib import Path

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


DENY_INGRESS = "int deny_ingress(struct __sk_buff *skb) { return 0; }"  # 0: drop


@contextlib.contextmanager
def cgroup_denying_ingress(name: str):
    """Move this process into a new cgroup whose ingress program drops every
    packet for its sockets; on the way out, back to the parent and the cgroup gone
    (removing it detaches the program)."""
    from bcc import BPF, BPFAttachType  # the distro's bcc, as pktfate's own

    from ..host.sockets import cgroup2_mount, cgroup_of

    mount = cgroup2_mount()
    parent = cgroup_of(os.getpid())
    if not mount or parent is None:
        raise SystemExit("no cgroup v2 hierarchy mounted")
    group = Path(mount + parent.rstrip("/")) / name
    group.mkdir()
    fd = os.open(group, os.O_RDONLY | os.O_DIRECTORY)
    bpf = BPF(text=DENY_INGRESS)
    try:
        bpf.attach_func(bpf.load_func("deny_ingress", BPF.CGROUP_SKB), fd,
                        BPFAttachType.CGROUP_INET_INGRESS)
        (group / "cgroup.procs").write_text(str(os.getpid()))
        yield group
    finally:
        (group.parent / "cgroup.procs").write_text(str(os.getpid()))
        os.close(fd)
        bpf.cleanup()
        group.rmdir()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m pktfate.lab.listeners")
    parser.add_argument("kind", choices=("md5", "filtered", "cgroup-filtered"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--peer", default="")
    parser.add_argument("--key", default="pktfate-lab")
    parser.add_argument("--ipv6", action="store_true")
    args = parser.parse_args()
    # SIGTERM (the lab ending) unwinds, so that a cgroup made here goes with it.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(0)))
    with contextlib.ExitStack() as stack:
        if args.kind == "cgroup-filtered":  # first: a socket belongs to the cgroup it was made in
            stack.enter_context(cgroup_denying_ingress(f"pktfate-lab-{args.port}-{os.getpid()}"))
        sock = listener(args.port, socket.AF_INET6 if args.ipv6 else socket.AF_INET)
        if args.kind == "md5":
            sock.setsockopt(socket.IPPROTO_TCP, TCP_MD5SIG, md5sig(args.peer, args.key.encode()))
        elif args.kind == "filtered":
            program = attach_drop_all(sock)
            stack.callback(lambda: program)  # the filter's buffer lives as long as the socket
        sock.listen(16)
        while True:
            conn, _ = sock.accept()
            conn.close()


if __name__ == "__main__":
    main()
