"""Settings reach the C as -D defines, shaped by what the kernel offers."""

from pathlib import Path

import pytest

from pktfate.attach.source import render_source
from pktfate.config import WatchConfig
from pktfate.kernel.discovery import BTF_FIELDS, KernelInfo


def _kernel(**tracepoints) -> KernelInfo:
    return KernelInfo(tracefs=Path("/sys/kernel/tracing"), tracepoints=tracepoints,
                      offsets={d: 8 for d, _, _ in BTF_FIELDS}, drop_reasons={},
                      rst_reasons={}, netns=4026531840)


def _defines(config: WatchConfig, kernel: KernelInfo) -> dict[str, str]:
    flags = config.cflags(kernel)
    return dict(f[2:].split("=", 1) for f in flags if f.startswith("-D"))


def test_filter_defines():
    d = _defines(WatchConfig(ports=(80,), protos=frozenset({"tcp"})),
                 _kernel(**{"skb/kfree_skb": frozenset({"reason", "skbaddr", "location"})}))
    assert "PF_NETNS" not in d  # a map value: the compiled object serves every namespace
    assert WatchConfig().watched_netns(_kernel()) == 4026531840
    assert (d["PF_WANT_TCP"], d["PF_WANT_UDP"], d["PF_WANT_ICMP"]) == ("1", "0", "1")
    assert (d["PF_FILTER_PORTS"], d["PF_FILTER_HOSTS"]) == ("1", "0")
    assert d["PF_HAVE_KFREE_SKB"] == "1" and d["PF_HAVE_DROP_REASON"] == "1"
    assert d["PF_KFREE_HAS_RX_SK"] == "0"
    assert d["PF_HAVE_TCP_SEND_RESET"] == "0"


def test_kernel_without_drop_reasons():
    d = _defines(WatchConfig(), _kernel(**{"skb/kfree_skb": frozenset({"skbaddr"})}))
    assert d["PF_HAVE_DROP_REASON"] == "0"


def test_kfree_skb_raw_form_where_btf_types_its_arguments():
    kfree = {"skb/kfree_skb": frozenset({"skbaddr", "location"})}

    def raw(args, **config):
        kernel = _kernel(**kfree)
        kernel.raw_tracepoints["skb/kfree_skb"] = (42, args)
        d = _defines(WatchConfig(**config), kernel)
        return int(d["PF_KFREE_RAW"]), int(d["PF_KFREE_RAW_REASON"]), int(d["PF_KFREE_RAW_RX_SK"])

    assert raw(("sk_buff *", "void *")) == (1, -1, -1)  # 5.10
    assert raw(("sk_buff *", "void *", "skb_drop_reason")) == (1, 2, -1)  # 6.1
    assert raw(("sk_buff *", "void *", "skb_drop_reason", "sock *")) == (1, 2, 3)  # 6.12
    assert raw(("void *", "sk_buff *")) == (0, -1, -1)  # not the layout the program reads
    assert raw(("sk_buff *", "void *"), links=False) == (0, -1, -1)  # --no-links
    assert _defines(WatchConfig(), _kernel(**kfree))["PF_KFREE_RAW"] == "0"  # no BTF form


@pytest.mark.parametrize(("tracepoint", "define", "fits", "misfits"), [
    # 5.10, 6.1: the skb alone; 6.3 and later: the code address after it.
    ("skb/consume_skb", "PF_CONSUME_RAW", [("sk_buff *",), ("sk_buff *", "void *")],
     [("void *",), ()]),
    ("icmp/icmp_send", "PF_ICMP_SEND_RAW", [("sk_buff *", "int", "int")],
     [("sk_buff *", "int"), ("sk_buff *", "void *", "int")]),
    ("tcp/tcp_bad_csum", "PF_TCP_BAD_CSUM_RAW", [("sk_buff *",)], [("sock *", "sk_buff *")]),
])
def test_raw_forms_where_btf_passes_what_their_program_reads(tracepoint, define, fits,
                                                             misfits):
    regular = {tracepoint: frozenset({"skbaddr"})}

    def raw(args, **config):
        kernel = _kernel(**regular)
        kernel.raw_tracepoints[tracepoint] = (43, args)
        return int(_defines(WatchConfig(**config), kernel)[define])

    assert [raw(args) for args in fits] == [1] * len(fits)
    assert [raw(args) for args in misfits] == [0] * len(misfits)  # not what it reads
    assert raw(fits[0], links=False) == 0  # --no-links
    assert _defines(WatchConfig(), _kernel(**regular))[define] == "0"  # no BTF form


def test_header_loads_through_rdonly_cast_only_in_the_raw_forms():
    ids = {"bpf_rdonly_cast": 65475, "iphdr": 27289, "udphdr": 27297, "tcphdr": 27301}

    def defines(btf_ids, args=("sk_buff *", "void *"), icmp=(), **config):
        kernel = _kernel(**{"skb/kfree_skb": frozenset({"skbaddr", "location"}),
                            "icmp/icmp_send": frozenset({"skbaddr", "type", "code"})})
        kernel.raw_tracepoints["skb/kfree_skb"] = (42, args)
        kernel.raw_tracepoints["icmp/icmp_send"] = (44, icmp)
        kernel.btf_ids.update(btf_ids)
        d = _defines(WatchConfig(**config), kernel)
        return (int(d["PF_RDONLY_CAST"]), int(d["PF_BTF_IPHDR"]), int(d["PF_BTF_UDPHDR"]),
                int(d["PF_BTF_TCPHDR"]))

    assert defines(ids) == (1, 27289, 27297, 27301)  # 6.2 and later
    assert defines({}) == (0, 0, 0, 0)  # 5.10, 6.1: no bpf_rdonly_cast
    assert defines(ids, links=False) == (0, 0, 0, 0)  # the regular tracepoint: a probe read
    assert defines(ids, args=("void *",)) == (0, 0, 0, 0)
    # Another raw form that peeks at the headers: icmp_send's.
    assert defines(ids, args=("void *",), icmp=("sk_buff *", "int", "int")) == \
        (1, 27289, 27297, 27301)


def test_all_netns_and_hosts():
    config = WatchConfig(hosts=("10.0.1.2", "::1"), all_netns=True)
    d = _defines(config, _kernel())
    assert config.watched_netns(_kernel()) == 0 and d["PF_FILTER_HOSTS"] == "1"
    assert config.host_keys()[0] == bytes([10, 0, 1, 2]) + bytes(12)


def test_rendered_source_has_every_hook_once():
    source = render_source()
    assert "#include \"" not in source
    for hook in ("pf_xdp", "pf_tc_ingress", "TRACEPOINT_PROBE(skb, kfree_skb)",
                 "TRACEPOINT_PROBE(tcp, tcp_send_reset)", "TRACEPOINT_PROBE(icmp, icmp_send)"):
        assert source.count(hook + "(") + source.count(hook + "\n") >= 1, hook
    assert source.count("struct pf_event {") == 1
