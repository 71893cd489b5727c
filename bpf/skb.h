/* Reading a kernel sk_buff's packet from tracepoints into events. The struct
 * reads themselves (namespace, network header) are kread.h's.
 */
#ifndef PKTFATE_SKB_H
#define PKTFATE_SKB_H

#include "event.h"
#include "filter.h"
#include "parse.h"
#include "kread.h"
#include "track.h"

#if PF_RDONLY_CAST
/* bpf_rdonly_cast (a kfunc, 6.2): the pointer it returns carries a kernel
 * struct's BTF type, so the verifier lets the program load that struct's members
 * itself; a load that faults reads 0, as a probe read would. The verifier turns
 * the call into a register move: no helper call is left. PF_KFUNC_RDONLY_CAST
 * marks the call; the loader points it at the running kernel's function
 * (attach/objects.py, with_kfuncs). */
static void *(*pf_rdonly_cast)(const void *obj, __u32 btf_id) = (void *)PF_KFUNC_RDONLY_CAST;

/* The members read, at struct iphdr's and struct udphdr's offsets. Volatile:
 * each load stays the member's own size, which is what the verifier checks. */
struct pf_iphdr_view {
	__u8 version_ihl;  /* ihl:4, version:4; an IPv6 header's version too */
	__u8 tos;
	__u16 tot_len;
	__u16 id;
	__u16 frag_off;    /* an IPv6 header's next header is its first byte */
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__u32 saddr;
	__u32 daddr;
};

struct pf_udphdr_view {
	__u16 source;      /* for ICMP: type, then code */
	__u16 dest;
};

struct pf_tcphdr_view {
	__u16 source;
	__u16 dest;
	__u32 seq;
	__u32 ack_seq;
	__u16 doff_flags;  /* the bitfields from res1 to cwr: the flags are the high byte */
};

/* pf_skb_peek's reads as loads. */
static __always_inline int pf_skb_peek_loads(__u64 head, struct pf_peek *p)
{
	const volatile struct pf_iphdr_view *ip = pf_rdonly_cast((void *)head, PF_BTF_IPHDR);
	const volatile struct pf_udphdr_view *l4;
	__u8 first = ip->version_ihl, ports[4];
	__u16 word = ip->frag_off, sport, dport;
	__u32 l3_len;

	if ((first >> 4) == 4) {
		p->proto = ip->protocol;
		if (bpf_ntohs(word) & 0x1FFF)
			return 1;  /* a later fragment: no ports */
		l3_len = (first & 0x0F) * 4;
		if (l3_len < 20)
			return 1;
	} else if ((first >> 4) == 6) {
		p->proto = word & 0xFF;  /* the byte at offset 6 */
		l3_len = 40;
	} else {
		return 0;
	}
	l4 = pf_rdonly_cast((void *)(head + l3_len), PF_BTF_UDPHDR);
	sport = l4->source;
	dport = l4->dest;
	ports[0] = sport & 0xFF;  /* the bytes as they lie in the packet */
	ports[1] = sport >> 8;
	ports[2] = dport & 0xFF;
	ports[3] = dport >> 8;
	pf_peek_ports(p, ports);
	return 1;
}

/* pf_skb_early's reads as loads: an IPv4 header into *ip and the bytes of the
 * transport header that pf_brief_ipv4() reads into t (ports; for TCP the
 * sequence number and the flags too), each as it lies in the packet. Returns 0
 * for anything but IPv4 (the full path takes it). */
static __always_inline int pf_skb_early_loads(__u64 head, struct pf_ipv4 *ip, __u8 *t)
{
	const volatile struct pf_iphdr_view *v = pf_rdonly_cast((void *)head, PF_BTF_IPHDR);
	const volatile struct pf_tcphdr_view *tcp;
	const volatile struct pf_udphdr_view *udp;
	__u32 ihl, seq;
	__u16 word;

	ip->ver_ihl = v->version_ihl;
	if ((ip->ver_ihl >> 4) != 4)
		return 0;
	ip->tot_len = v->tot_len;
	ip->id = v->id;
	ip->frag_off = v->frag_off;
	ip->protocol = v->protocol;
	ip->saddr = v->saddr;
	ip->daddr = v->daddr;
	ihl = (ip->ver_ihl & 0x0F) * 4;
	if (ihl < 20)
		return 0;
	/* Every byte pf_brief_ipv4() may read is written on every path: the verifier
	 * does not see that the protocol it tests there is the one tested here. */
	seq = 0;
	word = 0;
	if (ip->protocol == PF_IPPROTO_TCP) {
		tcp = pf_rdonly_cast((void *)(head + ihl), PF_BTF_TCPHDR);
		seq = tcp->seq;
		word = tcp->doff_flags;
		udp = (const volatile struct pf_udphdr_view *)tcp;
	} else {
		udp = pf_rdonly_cast((void *)(head + ihl), PF_BTF_UDPHDR);
	}
	__builtin_memcpy(t + 4, &seq, 4);
	t[13] = word >> 8;
	word = udp->source;
	__builtin_memcpy(t, &word, 2);
	word = udp->dest;
	__builtin_memcpy(t + 2, &word, 2);
	return 1;
}
#endif

/* True when the namespace passes the filter (a watched namespace of 0 means
 * every namespace). */
static __always_inline int pf_netns_ok(__u32 inum)
{
	int key = PF_SETTING_NETNS;
	__u32 *watched = pf_settings.lookup(&key);

	return watched && (*watched == 0 || inum == *watched);
}

/* The filter's view of the IP packet in a kernel skb (pf_peek_frame's twin for
 * tracepoints): protocol and ports, read into the stack. Returns 0 when the skb
 * holds no readable IP header. */
static __always_inline int pf_skb_peek(__u64 skb, struct pf_peek *p, const int direct,
				       __u64 *network)
{
	__u64 head = direct ? pf_skb_network_direct(skb) : pf_skb_network(skb);

	*network = head;  /* for the early path (pf_skb_early) */
#if PF_RDONLY_CAST
	if (direct)
		return head && pf_skb_peek_loads(head, p);
#endif
	/* An IPv4 header without options and the ports after it, in one read; the
	 * bytes past a short packet are the buffer's own tail room, never read
	 * as the packet's (the protocol says what follows). */
	__u8 ip[24] = {}, l4[4];
	__u32 l3_len;

	if (!head || bpf_probe_read_kernel(ip, sizeof(ip), (void *)head))
		return 0;
	if ((ip[0] >> 4) == 4) {
		p->proto = ip[9];
		if (((ip[6] << 8) | ip[7]) & 0x1FFF)
			return 1;  /* a later fragment: no ports */
		l3_len = (ip[0] & 0x0F) * 4;
		if (l3_len == 20) {
			pf_peek_ports(p, ip + 20);
			return 1;
		}
		if (l3_len < 20)
			return 1;
	} else if ((ip[0] >> 4) == 6) {
		p->proto = ip[6];
		l3_len = 40;
	} else {
		return 0;
	}
	if (bpf_probe_read_kernel(l4, sizeof(l4), (void *)(head + l3_len)) == 0)
		pf_peek_ports(p, l4);
	return 1;
}

/* Fill e from the IP packet inside a kernel skb. Returns 0 when the skb holds
 * no readable IP header. */
static __always_inline int pf_fill_from_skb(struct pf_event *e, __u64 skb)
{
	__u64 head;
	__u8 first = 0;
	__u32 l3_len = 0, l4_avail;

	e->skb = skb;
	head = pf_skb_network(skb);
	if (!head)
		return 0;
	if (bpf_probe_read_kernel(&first, 1, (void *)head))
		return 0;
	if ((first >> 4) == 4) {
		struct pf_ipv4 ip = {};

		if (bpf_probe_read_kernel(&ip, sizeof(ip), (void *)head))
			return 0;
		l3_len = pf_fill_ipv4(e, &ip);
	} else if ((first >> 4) == 6) {
		struct pf_ipv6 ip6 = {};

		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), (void *)head))
			return 0;
		l3_len = pf_fill_ipv6(e, &ip6);
	} else {
		return 0;
	}
	if (!l3_len)
		return 1;  /* addresses known, no transport header to read */
	/* A fixed-size read: bytes past the packet's end are the skb's own tail
	 * room, and snap_len says how many of them belong to the packet. */
	if (bpf_probe_read_kernel(e->snap, PF_SNAP_LEN, (void *)(head + l3_len)))
		return 1;
	l4_avail = e->l4_len;
	e->snap_len = l4_avail > PF_SNAP_LEN ? PF_SNAP_LEN : l4_avail;
	pf_parse_l4(e);
	return 1;
}

/* A new event in namespace `netns`, or 0 when the filter leaves that one out. */
static __always_inline struct pf_event *pf_event_in_netns(__u8 hook, __u32 netns)
{
	struct pf_event *e;

	if (!pf_netns_ok(netns))
		return 0;
	e = pf_new_event(hook);
	if (e)
		e->netns = netns;
	return e;
}

/* The early path (filter.h) for an skb that passed the filter's cheap part and
 * the namespace: the IPv4 header at `head` (where pf_skb_peek found the network
 * header) and the transport header's first 20 bytes, copied out as the full
 * path's fill would read them. */
static __always_inline int pf_skb_early(__u8 hook, __u64 skb, __u64 head, __u32 reason,
					__u8 watched, const int direct)
{
	struct pf_brief b = {};
	struct pf_ipv4 ip;
	__u8 t[20];
	__u32 ihl;

	if (!PF_SAMPLE_AFTER || !head)
		return PF_EARLY_FULL;
#if PF_RDONLY_CAST
	if (direct) {
		if (!pf_skb_early_loads(head, &ip, t))
			return PF_EARLY_FULL;
		goto brief;
	}
#endif
	if (bpf_probe_read_kernel(&ip, sizeof(ip), (void *)head) || (ip.ver_ihl >> 4) != 4)
		return PF_EARLY_FULL;
	ihl = (ip.ver_ihl & 0x0F) * 4;
	if (ihl < 20 || bpf_probe_read_kernel(t, sizeof(t), (void *)(head + ihl)))
		return PF_EARLY_FULL;
#if PF_RDONLY_CAST
brief:
#endif
	if (!pf_brief_ipv4(&b, &ip, t, hook, reason, watched))
		return PF_EARLY_FULL;
	return pf_early_pick(&b, skb);
}

/* A new event for a packet a tracepoint handed over, or 0 when the filter
 * refuses it. `found` and `fp` are what pf_track_find() said of the skb (found
 * -1: not asked yet); `direct`: the skb is a BTF-typed pointer (pf_skb_peek).
 * The filter's cheap part comes first: on a busy host most skbs are for other
 * ports, and two reads of the skb tell so; the namespace (three or four
 * dependent reads) only for the packets that pass, and for the tracked ones,
 * whose rewritten tuple no longer passes.
 * `picked`, where the caller takes the early path (a constant 0 elsewhere): set
 * to 1 when the event was counted there and is to be sent as it is (pf_send);
 * a packet sampled out there makes no event (0 is returned). `reason` is for
 * that count's key. */
static __always_inline struct pf_event *pf_skb_event_from(__u8 hook, __u64 skb, __u64 sk_hint,
							  int found, __u32 fp, const int direct,
							  __u32 reason, int *picked)
{
	struct pf_peek p = {};
	struct pf_event *e;
	__u64 dev;
	__u32 netns;
	__u8 watched = 0;
	__u64 head = 0;
	int ok = pf_skb_peek(skb, &p, direct, &head) && pf_peek_ok(&p, &watched), early;

	if (!ok) {
		if (found < 0)
			fp = pf_track_find(skb, &found);
		if (!found)
			return 0;
	}
	/* Another namespace's packets are left out, but for a tracked one rewritten
	 * since it matched (the filter refuses its tuple now): a veth hands the same
	 * skb to a namespace this host runs, a container behind a port mapping, and
	 * its fate there is the watched request's. One that still matches was only
	 * routed on: another host's (a lab's namespaces stand for hosts), followed
	 * with --all-netns alone. */
	netns = pf_skb_netns(skb, sk_hint, &dev, direct);
	if (!pf_netns_ok(netns)) {
		if (ok)
			return 0;
		if (found < 0)
			fp = pf_track_find(skb, &found);
		if (!found)
			return 0;
	}
	if (picked && ok) {
		early = pf_skb_early(hook, skb, head, reason, watched, direct);
		if (early == PF_EARLY_SAMPLED)
			return 0;
		*picked = early == PF_EARLY_PICKED;
	}
	if (found < 0)
		fp = pf_track_find(skb, &found);
	e = pf_new_event(hook);
	if (!e)
		return 0;
	e->netns = netns;
	e->ifindex = dev ? pf_read_u32(dev, PF_OFF_DEV_IFINDEX) : 0;
	if (!pf_fill_from_skb(e, skb))
		return 0;
	if (picked && *picked) {  /* as pf_keep() leaves an event that matched */
		e->watched_port = watched;
		return e;
	}
	pf_track_match(e, found, fp);  /* provisional: pf_keep() decides */
	return e;
}

static __always_inline struct pf_event *pf_skb_event(__u8 hook, __u64 skb, __u64 sk_hint,
						     const int direct)
{
	return pf_skb_event_from(hook, skb, sk_hint, -1, 0, direct, 0, 0);
}

/* Whether a tracepoint's event goes to user space: it matches the filter in a
 * watched namespace, or it is a tracked packet whose tuple was rewritten. */
static __always_inline int pf_keep(struct pf_event *e)
{
	if (pf_netns_ok(e->netns) && pf_wanted(e)) {
		e->tracked = 0;
		return 1;
	}
	return e->tracked;
}

#endif
