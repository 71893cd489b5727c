"""A watch's settings: what the CLI was given, frozen, and the -D defines that
carry it into the BPF C. This is the only place the C's settings are made."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from .kernel.discovery import TRACEPOINTS, KernelInfo

# Kernel functions the programs call (kfuncs), each by a mark in place of a
# helper's number (its -D define): the loader points each marked call at the
# function's BTF id in the running kernel (attach/objects.py, with_kfuncs).
KFUNC_MARKS = {"bpf_rdonly_cast": 0x7FFF0001}

# Raw tracepoints whose programs read their leading arguments only: tracepoint ->
# (the define that compiles the raw form, the types it reads, in order). What
# follows them changes between kernels (consume_skb gained the code address in
# 6.3) and is not read. kfree_skb, whose arguments move, is _raw_kfree_skb's.
SKB_FIRST_RAW = {
    "skb/consume_skb": ("PF_CONSUME_RAW", ("sk_buff *",)),
    "icmp/icmp_send": ("PF_ICMP_SEND_RAW", ("sk_buff *", "int", "int")),
    "tcp/tcp_bad_csum": ("PF_TCP_BAD_CSUM_RAW", ("sk_buff *",)),
}

PROTOCOLS = ("tcp", "udp", "icmp")


@dataclass(frozen=True)
class WatchConfig:
    ports: tuple[int, ...] = ()
    hosts: tuple[str, ...] = ()  # normalised IPv4/IPv6 address strings
    protos: frozenset[str] = frozenset(PROTOCOLS)
    ifaces: tuple[str, ...] = ()  # empty: every interface that is up, but lo
    duration: float | None = None
    json: bool = False
    ready_file: Path | None = None
    all_netns: bool = False
    xdp: bool = True
    # Generic XDP beside tc ingress (hooks.xdp_modes): off unless asked for, as
    # both see the same skb and generic XDP costs a copy per packet on a veth.
    xdp_generic: bool = False
    tc: bool = True
    # XDP and tc as BPF links where the kernel has them (they end with the
    # process); False: netlink and clsact, as on kernels without them.
    links: bool = True
    ringbuf_pages: int = 512  # 2 MiB: ~12,000 events of slack between drains
    show_all: bool = False  # print every event, not only the noteworthy ones
    # Past this many events of one hook, reason and flow, send 1 packet in
    # sample_every (0: send all). Counts stay exact: the kernel keeps them.
    sample_after: int = 2000
    sample_every: int = 64
    agg_entries: int = 16384  # aggregation entries (hook x reason x flow)
    # Follow a matched packet by its skb after NAT rewrites it (bpf/track.h).
    track: bool = True
    track_entries: int = 8192  # slots for skbs followed at once (a power of two: bpf/track.h)
    pcap: str | None = None  # --pcap: a pcapng file to write, "-" for standard output
    snaplen: int = 64  # --snaplen: transport bytes per packet in the pcapng file

    def watched_netns(self, kernel: KernelInfo) -> int:
        """The namespace the tracepoints keep (0: every one). A map value, not a
        define: one compiled object then serves every namespace."""
        return 0 if self.all_netns else kernel.netns

    def host_keys(self) -> list[bytes]:
        """Each host as the 16 bytes the BPF map compares: IPv4 in the first 4."""
        keys = []
        for host in self.hosts:
            addr = ipaddress.ip_address(host)
            keys.append(addr.packed.ljust(16, b"\0"))
        return keys

    def _raw_args(self, kernel: KernelInfo, tracepoint: str) -> tuple[str, ...]:
        """The types of a tracepoint's arguments in its BTF-typed raw form, where
        the kernel has it and links are wanted (its attachment is one); () else.
        --no-links keeps the regular tracepoints, as before links."""
        raw = kernel.raw_tracepoints.get(tracepoint) if self.links else None
        return raw[1] if raw else ()

    def _raw_kfree_skb(self, kernel: KernelInfo) -> dict[str, int]:
        """skb:kfree_skb's raw form (bpf/kfree_skb.c): which of its u64 arguments
        holds what, by type, -1 where absent."""
        args = self._raw_args(kernel, "skb/kfree_skb")
        usable = args[:2] == ("sk_buff *", "void *")  # the skb, then the code address

        def where(type_name: str) -> int:
            return args.index(type_name) if usable and type_name in args else -1

        return {"PF_KFREE_RAW": int(usable), "PF_KFREE_RAW_REASON": where("skb_drop_reason"),
                "PF_KFREE_RAW_RX_SK": where("sock *")}

    def _header_loads(self, kernel: KernelInfo, raw_peeks: bool) -> dict[str, int]:
        """Whether the raw forms read the packet's headers as kernel structs
        through bpf_rdonly_cast (6.2; plain loads, bpf/skb.h) rather than with a
        helper call, and the BTF ids that takes."""
        ids = kernel.btf_ids if raw_peeks else {}
        return {"PF_RDONLY_CAST": int(bool(ids)),
                "PF_KFUNC_RDONLY_CAST": KFUNC_MARKS["bpf_rdonly_cast"],
                "PF_BTF_IPHDR": ids.get("iphdr", 0), "PF_BTF_UDPHDR": ids.get("udphdr", 0),
                "PF_BTF_TCPHDR": ids.get("tcphdr", 0)}

    def _raw_skb_first(self, kernel: KernelInfo) -> dict[str, int]:
        """The raw forms whose programs read only their first arguments
        (bpf/consume_skb.c, icmp.c, tcp.c), each where the kernel passes them
        with the types the program reads (SKB_FIRST_RAW)."""
        return {define: int(self._raw_args(kernel, tracepoint)[:len(types)] == types)
                for tracepoint, (define, types) in SKB_FIRST_RAW.items()}

    def cflags(self, kernel: KernelInfo) -> list[str]:
        """The -D defines that configure bpf/pktfate.c for this watch and kernel."""
        defines: dict[str, int] = {
            "PF_WANT_TCP": int("tcp" in self.protos),
            "PF_WANT_UDP": int("udp" in self.protos),
            # ICMP is always followed: "ping works" is half of most diagnoses.
            "PF_WANT_ICMP": 1,
            "PF_FILTER_PORTS": int(bool(self.ports)),
            "PF_FILTER_HOSTS": int(bool(self.hosts)),
            "PF_RINGBUF_PAGES": self.ringbuf_pages,
            "PF_SAMPLE_AFTER": self.sample_after,
            "PF_SAMPLE_EVERY": max(1, self.sample_every),
            "PF_AGG_ENTRIES": self.agg_entries,
            "PF_HOOK_XDP_ON": int(self.xdp),
            "PF_HOOK_TC_ON": int(self.tc),
            # Tracking starts at tc ingress: without tc there is nothing to follow.
            "PF_TRACK": int(self.track and self.tc),
            "PF_TRACK_ENTRIES": self.track_entries,
        }
        for define, tracepoint in TRACEPOINTS.items():
            defines[define] = int(kernel.has(tracepoint))
        kfree = kernel.tracepoints.get("skb/kfree_skb", frozenset())
        defines["PF_HAVE_DROP_REASON"] = int("reason" in kfree)
        defines["PF_KFREE_HAS_RX_SK"] = int("rx_sk" in kfree)
        defines.update(self._raw_kfree_skb(kernel))
        defines.update(self._raw_skb_first(kernel))
        # The raw forms that peek at a packet's headers (pf_skb_peek, direct).
        peeking = ("PF_KFREE_RAW", "PF_ICMP_SEND_RAW", "PF_TCP_BAD_CSUM_RAW")
        defines.update(self._header_loads(kernel, any(defines[d] for d in peeking)))
        rst = kernel.tracepoints.get("tcp/tcp_send_reset", frozenset())
        defines["PF_RST_HAS_REASON"] = int("reason" in rst)
        defines.update(kernel.offsets)
        flags = ["-Wno-ignored-attributes", "-Wno-unused-function"]
        flags += [f"-D{name}={value}" for name, value in sorted(defines.items())]
        return flags
