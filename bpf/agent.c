/* pktfate agent: the always-on programs. They count and never send: every drop
 * (skb:kfree_skb) and every RST or ICMP error this host sends, in per-CPU hash
 * tables keyed by namespace, reason, code address, protocol and direction. No
 * event reaches user space; the agent reads the tables when it is scraped
 * (tracer/agent/counters.py). Settings arrive as -D defines from
 * tracer/agent/counters.py (PF_AGENT_*) and tracer/config.py (the hooks' forms,
 * the struct offsets).
 *
 * Bounded: each table has a fixed number of keys. A key that finds no room is
 * counted in pf_agent_overflow instead, never lost, and the agent shows it as
 * the "other" series. Ports are no part of a key: a port scan adds no key. */

enum skb_drop_reason { PF_SKB_DROP_REASON_PLACEHOLDER };
enum sk_rst_reason { PF_SK_RST_REASON_PLACEHOLDER };

#include "kread.h"

#define PF_ETH_P_IP 0x0800
#define PF_ETH_P_IPV6 0x86DD
#define PF_DIR_RECEIVED 1 /* arrived through a device: received or forwarded */
#define PF_DIR_LOCAL 2    /* made on this host */
#define PF_SENT_RST 1
#define PF_SENT_ICMP 2
/* pf_agent_overflow's slots. Mirrored in tracer/agent/counters.py. */
#define PF_OVERFLOW_DROPS 0
#define PF_OVERFLOW_SENT 1
#define PF_OVERFLOW_PORTS 2

/* Mirrored in tracer/agent/counters.py (DropKey, SentKey). */
struct pf_drop_key {
	__u64 location; /* the code address that freed the packet */
	__u32 netns;
	__u32 reason;
	__u8 family; /* 4, 6; 0: not IP */
	__u8 proto;  /* the IP protocol; 0 when not IP */
	__u8 dir;    /* PF_DIR_* */
	__u8 pad[5];
};

struct pf_sent_key {
	__u32 netns;
	__u8 kind;   /* PF_SENT_* */
	__u8 family;
	__u8 type;   /* ICMP type and code; 0 for a RST */
	__u8 code;
};

BPF_PERCPU_HASH(pf_drops, struct pf_drop_key, __u64, PF_AGENT_DROP_KEYS);
BPF_PERCPU_HASH(pf_sent, struct pf_sent_key, __u64, PF_AGENT_SENT_KEYS);
BPF_PERCPU_ARRAY(pf_agent_overflow, __u64, 3);
/* The armed watch's ports (--watch-port), as the watch's bitmap: 64 a word. */
#define PF_PORT_WORDS 1024
BPF_ARRAY(pf_ports, __u64, PF_PORT_WORDS);
/* Per namespace and watched port: its packets dropped, and the RSTs and ICMP
 * errors sent in answer to them: the armed watch's trigger, which then watches
 * in that namespace (tracer/agent/trigger.py). */
struct pf_port_key {
	__u32 netns;
	__u16 port;
	__u16 pad;
};
BPF_PERCPU_HASH(pf_port_failures, struct pf_port_key, __u64, PF_AGENT_PORT_KEYS);

static __always_inline int pf_port_watched(__u16 port)
{
	int word = port >> 6;
	__u64 *bits = pf_ports.lookup(&word);

	return port && bits && ((*bits >> (port & 63)) & 1);
}

static __always_inline void pf_overflow(int slot)
{
	__u64 *n = pf_agent_overflow.lookup(&slot);

	if (n)
		(*n)++;
}

/* Add one to a per-CPU counter: this CPU's slot is its own, so no atomic. An
 * insert that loses a race with another CPU's finds the key on a second look;
 * a key with no room left is counted in the table's overflow slot. One function
 * a table: bcc rewrites map calls only outside macros. */
static __always_inline void pf_bump(__u64 *n, int slot)
{
	if (n)
		(*n)++;
	else
		pf_overflow(slot);
}

static __always_inline void pf_count_drop(struct pf_drop_key *k)
{
	__u64 *n = pf_drops.lookup(k), one = 1;

	if (!n && pf_drops.insert(k, &one) == 0)
		return;
	pf_bump(n ? n : pf_drops.lookup(k), PF_OVERFLOW_DROPS);
}

static __always_inline void pf_count_sent(struct pf_sent_key *k)
{
	__u64 *n = pf_sent.lookup(k), one = 1;

	if (!n && pf_sent.insert(k, &one) == 0)
		return;
	pf_bump(n ? n : pf_sent.lookup(k), PF_OVERFLOW_SENT);
}

static __always_inline void pf_port_failed(__u32 netns, __u16 port)
{
	struct pf_port_key k = {.netns = netns, .port = port};

	__u64 *n, one = 1;

	if (!pf_port_watched(port))
		return;
	n = pf_port_failures.lookup(&k);
	if (!n && pf_port_failures.insert(&k, &one) == 0)
		return;
	pf_bump(n ? n : pf_port_failures.lookup(&k), PF_OVERFLOW_PORTS);
}

/* The IP protocol and ports of the packet at `head` (the network header): one
 * read of an IPv4 header without options and the ports after it, or of an IPv6
 * header's next-header byte and the ports at 40. Ports are 0 where not read. */
static __always_inline __u8 pf_l4(__u64 head, __u8 family, __u16 *sport, __u16 *dport)
{
	__u8 ip[24] = {}, l4[4] = {};
	__u32 l3_len;

	*sport = *dport = 0;
	if (!head || bpf_probe_read_kernel(ip, sizeof(ip), (void *)head))
		return 0;
	if (family == 4) {
		l3_len = (ip[0] & 0x0F) * 4;
		if (((ip[6] << 8) | ip[7]) & 0x1FFF)
			return ip[9]; /* a later fragment: no ports */
		if (l3_len == 20) {
			__builtin_memcpy(l4, ip + 20, 4);
		} else if (l3_len < 20 || bpf_probe_read_kernel(l4, 4, (void *)(head + l3_len))) {
			return ip[9];
		}
	} else {
		if (bpf_probe_read_kernel(l4, 4, (void *)(head + 40)))
			return ip[6];
	}
	*sport = (l4[0] << 8) | l4[1];
	*dport = (l4[2] << 8) | l4[3];
	return family == 4 ? ip[9] : ip[6];
}

static __always_inline __u8 pf_family(__u16 protocol_be)
{
	__u16 p = bpf_ntohs(protocol_be);

	return p == PF_ETH_P_IP ? 4 : p == PF_ETH_P_IPV6 ? 6 : 0;
}

/* A drop: counted under its key; and, when a watched port's packet, for the
 * trigger. `direct`: skb is a BTF-typed pointer (the raw form). */
static __always_inline int pf_on_drop(__u64 skb, __u64 location, __u32 reason, __u64 sk_hint,
				      const int direct)
{
	struct pf_drop_key k = {};
	__u16 protocol, sport, dport;
	__u64 dev, head;
	__u32 iif;

	if (direct) {
		protocol = *(volatile __u16 *)(skb + PF_OFF_SKB_PROTOCOL);
		iif = *(volatile __u32 *)(skb + PF_OFF_SKB_IIF);
		head = pf_skb_network_direct(skb);
	} else {
		bpf_probe_read_kernel(&protocol, sizeof(protocol), (void *)(skb + PF_OFF_SKB_PROTOCOL));
		iif = pf_read_u32(skb, PF_OFF_SKB_IIF);
		head = pf_skb_network(skb);
	}
	k.location = location;
	k.reason = reason;
	k.netns = pf_skb_netns(skb, sk_hint, &dev, direct);
	k.family = pf_family(protocol);
	k.dir = iif ? PF_DIR_RECEIVED : PF_DIR_LOCAL;
	if (k.family) {
		k.proto = pf_l4(head, k.family, &sport, &dport);
		/* The service's side: a request's destination, a reply's source. */
		pf_port_failed(k.netns, iif ? dport : sport);
	}
	pf_count_drop(&k);
	return 0;
}

#if PF_KFREE_RAW
int pf_agent_kfree_raw(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 reason = 0;
	__u64 sk_hint = 0;

#if PF_KFREE_RAW_REASON >= 0 && PF_HAVE_DROP_REASON
	reason = (__u32)ctx->args[PF_KFREE_RAW_REASON];
#endif
#if PF_KFREE_RAW_RX_SK >= 0
	sk_hint = ctx->args[PF_KFREE_RAW_RX_SK];
#endif
	return pf_on_drop(ctx->args[0], ctx->args[1], reason, sk_hint, 1);
}
#endif

TRACEPOINT_PROBE(skb, kfree_skb)
{
	__u32 reason = 0;
	__u64 sk_hint = 0;

#if PF_KFREE_HAS_RX_SK
	sk_hint = (__u64)args->rx_sk;
#endif
#if PF_HAVE_DROP_REASON
	reason = args->reason;
#endif
	return pf_on_drop((__u64)args->skbaddr, (__u64)args->location, reason, sk_hint, 0);
}

/* An answer this host sends about the packet `skb` (0: none, then `sk` says
 * where): counted, and for the trigger when it answers a watched port. */
static __always_inline void pf_on_sent(__u8 kind, __u64 skb, __u64 sk, __u8 family, __u16 port,
				       __u8 type, __u8 code)
{
	struct pf_sent_key k = {.kind = kind, .type = type, .code = code, .family = family};
	__u16 protocol = 0, sport, dport;
	__u64 dev;

	if (skb) {
		k.netns = pf_skb_netns(skb, sk, &dev, 0);
		bpf_probe_read_kernel(&protocol, sizeof(protocol), (void *)(skb + PF_OFF_SKB_PROTOCOL));
		k.family = pf_family(protocol);
		if (k.family) {
			pf_l4(pf_skb_network(skb), k.family, &sport, &dport);
			port = dport; /* the answered packet's destination */
		}
	} else {
		k.netns = pf_sock_netns(sk);
	}
	pf_port_failed(k.netns, port);
	pf_count_sent(&k);
}

#if PF_HAVE_TCP_SEND_RESET
TRACEPOINT_PROBE(tcp, tcp_send_reset)
{
	__u8 sa[4];
	__u16 family;

	/* Without an skb the socket aborted its connection: its own address, a
	 * sockaddr copy on every kernel that has the tracepoint (the family in its
	 * first two bytes, the port in network order next). */
	__builtin_memcpy(sa, args->saddr, sizeof(sa));
	family = sa[0] | (sa[1] << 8);
	pf_on_sent(PF_SENT_RST, (__u64)args->skbaddr, (__u64)args->skaddr,
		   family == 2 ? 4 : family == 10 ? 6 : 0, (sa[2] << 8) | sa[3], 0, 0);
	return 0;
}
#endif

#if PF_HAVE_ICMP_SEND
TRACEPOINT_PROBE(icmp, icmp_send)
{
	pf_on_sent(PF_SENT_ICMP, (__u64)args->skbaddr, 0, 0, 0, args->type, args->code);
	return 0;
}
#endif
