/* Maps, in-kernel filtering and event submission, shared by every hook.
 *
 * Settings arrive as -D defines from tracer/config.py (PF_WANT_*, PF_FILTER_*);
 * the port and address sets, whose size varies, and the watched namespace, which
 * changes from one run to the next, arrive in maps that the loader fills before
 * attaching anything (a compiled object then serves every namespace: see
 * tracer/attach/objects.py).
 */
#ifndef PKTFATE_FILTER_H
#define PKTFATE_FILTER_H

#include "event.h"
#include "parse.h"
#include "track.h"

/* Counter slots in pf_stats: [hook] events that matched, [PF_STAT_LOST + hook]
 * events the ring buffer had no room for, [PF_STAT_SAMPLED + hook] events not
 * sent because of sampling, [PF_STAT_AGG_FULL] events the aggregation table had
 * no room for. Mirrored in tracer/decode/raw.py. */
#define PF_STAT_LOST 16
#define PF_STAT_SAMPLED 32
#define PF_STAT_AGG_FULL 48
#define PF_STAT_SLOTS 64


struct pf_addr {
	__u32 a[4];
};

BPF_RINGBUF_OUTPUT(pf_events, PF_RINGBUF_PAGES);
/* The watched ports as a bitmap, 64 ports per word: an array lookup with the
 * port's word as key, which the verifier inlines into a load (a hash lookup per
 * port, twice per packet, was most of a refused packet's cost). */
#define PF_PORT_WORDS 1024
BPF_ARRAY(pf_ports, __u64, PF_PORT_WORDS);
BPF_HASH(pf_hosts, struct pf_addr, __u8, 64);
BPF_PERCPU_ARRAY(pf_scratch, struct pf_event, 1);
/* [PF_SETTING_NETNS]: the watched namespace's inode number, 0 for every one. An
 * array lookup with a constant key: the verifier inlines it into a load. */
#define PF_SETTING_NETNS 0
#define PF_SETTINGS 4
BPF_ARRAY(pf_settings, __u32, PF_SETTINGS);
BPF_PERCPU_ARRAY(pf_stats, __u64, PF_STAT_SLOTS);
/* Per CPU: a flood's packets on two CPUs never contend for one counter. */
BPF_PERCPU_HASH(pf_agg, struct pf_agg_key, __u64, PF_AGG_ENTRIES);
BPF_PERCPU_ARRAY(pf_agg_hot, struct pf_agg_hot, PF_AGG_HOT_SLOTS);

/* A zeroed per-CPU event to fill: the stack is too small to hold one beside the
 * parser's locals, and reserving ring-buffer space for packets we then discard
 * would cost every unrelated packet an atomic operation. */
static __always_inline struct pf_event *pf_new_event(__u8 hook)
{
	int zero = 0;
	struct pf_event *e = pf_scratch.lookup(&zero);

	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	e->hook = hook;
	e->ts_ns = bpf_ktime_get_ns();
	return e;
}

/* Whether a port is watched: its bit in the bitmap. */
static __always_inline int pf_port_watched(__u16 port)
{
	int word = port >> 6;
	__u64 *bits = pf_ports.lookup(&word);

	return bits && ((*bits >> (port & 63)) & 1);
}

static __always_inline int pf_addr_watched(const __u8 *src, __u32 len)
{
	struct pf_addr a = {};

	__builtin_memcpy(a.a, src, len);
	return pf_hosts.lookup(&a) != 0;
}

/* Where an ICMP error quotes the packet it answers: a router's "time exceeded"
 * about a probe to a watched host comes from the router's own address, so the
 * quoted destination is what ties it to the watch. Offsets are into snap: the
 * 8-byte ICMP header, then the quoted IP header (IPv4 without options). */
static __always_inline int pf_quoted_host_ok(struct pf_event *e)
{
	const __u8 *s = e->snap;

	if (e->proto == PF_IPPROTO_ICMP && e->snap_len >= 28 && s[8] == 0x45 &&
	    (e->icmp_type == 3 || e->icmp_type == 4 || e->icmp_type == 5 ||
	     e->icmp_type == 11 || e->icmp_type == 12))
		return pf_addr_watched(s + 20, 4) || pf_addr_watched(s + 24, 4);
	if (e->proto == PF_IPPROTO_ICMPV6 && e->snap_len >= 48 && e->icmp_type >= 1 &&
	    e->icmp_type <= 4)
		return pf_addr_watched(s + 16, 16) || pf_addr_watched(s + 32, 16);
	return 0;
}

static __always_inline int pf_host_ok(struct pf_event *e)
{
	if (!PF_FILTER_HOSTS)
		return 1;
	if (pf_addr_watched((const __u8 *)e->saddr, 16) ||
	    pf_addr_watched((const __u8 *)e->daddr, 16))
		return 1;
	return pf_quoted_host_ok(e);
}

/* The first part of the filter: protocol and ports (TCP and UDP). ICMP is not
 * port-filtered: it is the contrast a diagnosis needs ("ping works"). Returns 0
 * when refused; else 1, with *watched saying which side holds the watched port
 * (PF_WATCHED_DPORT or PF_WATCHED_SPORT; 0 when ports are not filtered), for the
 * aggregation key. Reads only its arguments: every hook asks it before it
 * touches event memory. */
static __always_inline int pf_l4_ok(__u8 proto, __u16 sport, __u16 dport, __u8 icmp_type,
				    __u8 *watched)
{
	*watched = 0;
	if (proto == PF_IPPROTO_TCP || proto == PF_IPPROTO_UDP) {
		if (proto == PF_IPPROTO_TCP ? !PF_WANT_TCP : !PF_WANT_UDP)
			return 0;
		if (!PF_FILTER_PORTS)
			return 1;
		if (pf_port_watched(dport))
			*watched = PF_WATCHED_DPORT;
		else if (pf_port_watched(sport))
			*watched = PF_WATCHED_SPORT;
		return *watched != 0;
	}
	if (proto == PF_IPPROTO_ICMP)
		return PF_WANT_ICMP;
	/* Neighbour discovery and multicast listener chatter (types 130-143) is the
	 * link's housekeeping, not traffic anyone asked about. */
	if (proto == PF_IPPROTO_ICMPV6)
		return PF_WANT_ICMP && (icmp_type < 130 || icmp_type > 143);
	return 0;
}

static __always_inline int pf_peek_ok(const struct pf_peek *p, __u8 *watched)
{
	return pf_l4_ok(p->proto, p->sport, p->dport, p->icmp_type, watched);
}

static __always_inline int pf_proto_ports_ok(struct pf_event *e)
{
	return pf_l4_ok(e->proto, e->sport, e->dport, e->icmp_type, &e->watched_port);
}

/* The whole in-kernel filter: protocol, ports, addresses. */
static __always_inline int pf_wanted(struct pf_event *e)
{
	return pf_proto_ports_ok(e) && pf_host_ok(e);
}

static __always_inline void pf_count(__u32 slot)
{
	__u64 *c = pf_stats.lookup(&slot);

	if (c)
		(*c)++;
}

/* The event's aggregation key: one entry per hook, reason and flow. */
static __always_inline void pf_agg_key_of(const struct pf_event *e, struct pf_agg_key *k)
{
	__builtin_memcpy(k->saddr, e->saddr, 16);
	__builtin_memcpy(k->daddr, e->daddr, 16);
	k->reason = e->reason;
	k->hook = e->hook;
	k->family = e->family;
	k->proto = e->proto;
	k->tcp_flags = e->tcp_flags;
	k->icmp_type = e->icmp_type;
	if (e->proto == PF_IPPROTO_TCP || e->proto == PF_IPPROTO_UDP) {
		k->sport = e->sport;
		k->dport = e->dport;
		/* Keep the watched side's port only: the peer's varies per connection. */
		if (e->watched_port == PF_WATCHED_DPORT)
			k->sport = 0;
		else if (e->watched_port == PF_WATCHED_SPORT)
			k->dport = 0;
	}
}

static __always_inline int pf_agg_key_eq(const struct pf_agg_key *a,
					 const struct pf_agg_key *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;

	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3] &&
	       x[4] == y[4] && x[5] == y[5];
}

/* Count one event in its aggregation entry; returns this CPU's new count there.
 *
 * A hash lookup (hashing the 48-byte key, walking a bucket) was most of what a
 * sampled-out packet cost at each hook. A flood repeats one key per hook, so each
 * hook keeps a key, with this CPU's count for it, in a per-CPU array slot
 * (pf_agg_hot): that key again is a compare and an increment. Other keys are
 * counted in pf_agg as before, one lookup each. A key takes the slot only after
 * PF_AGG_HOT_AFTER events of other keys in a row (or when it is empty), giving the
 * old key's count back to its pf_agg slot: mixed traffic (a service's SYNs, ACKs
 * and FINs at one hook) keeps its most frequent key hot instead of trading the
 * slot, and a lookup more, on every event; a flood that follows takes the slot
 * within PF_AGG_HOT_AFTER packets. The kernel runs no program twice at once on
 * one CPU, so nothing else writes this CPU's slots. User space reads both
 * (tracer.aggregates). */
#define PF_AGG_HOT_AFTER 8
static __always_inline __u64 pf_aggregate(const struct pf_agg_key *k)
{
	__u32 slot = k->hook;
	struct pf_agg_hot *hot = pf_agg_hot.lookup(&slot);
	__u64 zero = 0, *n, *old;

	if (hot && pf_agg_key_eq(&hot->key, k)) {
		hot->misses = 0;
		return ++hot->count;
	}
	n = pf_agg.lookup((struct pf_agg_key *)k);
	if (!n) {
		pf_agg.insert((struct pf_agg_key *)k, &zero);  /* or another CPU did */
		n = pf_agg.lookup((struct pf_agg_key *)k);
		if (!n) {
			pf_count(PF_STAT_AGG_FULL);
			return 1;
		}
	}
	if (!hot || (hot->key.hook && ++hot->misses < PF_AGG_HOT_AFTER))
		return ++*n;
	if (hot->key.hook) {
		old = pf_agg.lookup(&hot->key);
		if (old)
			*old = hot->count;
	}
	__builtin_memcpy(&hot->key, k, sizeof(*k));
	hot->count = *n + 1;
	hot->misses = 0;
	return hot->count;
}

/* Count a matching event exactly, then say whether it goes to user space: past
 * PF_SAMPLE_AFTER events in its entry, only packets whose IPv4 id is a multiple
 * of PF_SAMPLE_EVERY go on. The id is the same at every hook, so a packet sent
 * on is followed at all of them. */
static __always_inline int pf_pick(const struct pf_agg_key *k, __u16 ip_id)
{
	__u64 count = pf_aggregate(k);

	pf_count(k->hook);
	if (PF_SAMPLE_AFTER && count > PF_SAMPLE_AFTER && ip_id % PF_SAMPLE_EVERY) {
		pf_count(PF_STAT_SAMPLED + k->hook);
		return 0;
	}
	return 1;
}

/* Send an event already counted. Without waking user space: it drains the ring
 * every few milliseconds, which keeps a flood from costing a wake-up per packet. */
static __always_inline void pf_send(struct pf_event *e)
{
	if (pf_events.ringbuf_output(e, sizeof(*e), BPF_RB_NO_WAKEUP))
		pf_count(PF_STAT_LOST + e->hook);
}

/* Count the event exactly, then send it unless sampled out. */
static __always_inline void pf_submit(struct pf_event *e)
{
	struct pf_agg_key k = {};

	pf_agg_key_of(e, &k);
	if (pf_pick(&k, e->ip_id))
		pf_send(e);
}

/* Sampling decided before the event is filled.
 *
 * Once sampling has started, most matching packets are counted and no more; the
 * count's key needs only the addresses, ports and TCP flags, so those are read
 * first (pf_brief), the count and the sampling decided, and the event (zeroed,
 * then filled from the whole header and the snap) made only for the packets that
 * go on. Done for TCP and UDP over IPv4 with a whole transport header: the bulk
 * of any flood. Everything else takes the full path, which counts as before.
 * The key is the one pf_agg_key_of() would make of the filled event, field for
 * field: the exact counts do not depend on which path counted (test_flood). */
#define PF_EARLY_FULL 0     /* not decided here: the full path counts it */
#define PF_EARLY_SAMPLED 1  /* counted and sampled out: nothing more to do */
#define PF_EARLY_PICKED 2   /* counted, to be sent: fill the event, pf_send() it */

struct pf_brief {
	struct pf_agg_key k;
	__u32 fp;     /* its fingerprint for tracking (pf_fingerprint) */
	__u16 ip_id;
};

/* The brief of an IPv4 packet from its header and the first 20 bytes after it
 * (both copied to the stack; only the first 8 are read for UDP). Returns 0 when
 * the packet is not one the early path takes. pf_fill_ipv4() and pf_parse_l4()
 * are what it must agree with. */
static __always_inline int pf_brief_ipv4(struct pf_brief *b, const struct pf_ipv4 *ip,
					 const __u8 *l4, __u8 hook, __u32 reason, __u8 watched)
{
	__u32 ihl = (ip->ver_ihl & 0x0F) * 4, pkt_len = bpf_ntohs(ip->tot_len), l4_len = 0;
	__u32 seq = 0;
	struct pf_agg_key *k = &b->k;

	if (ihl < 20 || (bpf_ntohs(ip->frag_off) & 0x1FFF))
		return 0;
	if (pkt_len > ihl)
		l4_len = pkt_len - ihl;
	k->proto = ip->protocol;
	b->ip_id = bpf_ntohs(ip->id);
	if (k->proto == PF_IPPROTO_TCP) {
		if (l4_len < 20)  /* the full path parses no ports, flags or sequence */
			return 0;
		k->tcp_flags = l4[13] & 0x3F;
		seq = ((__u32)l4[4] << 24) | ((__u32)l4[5] << 16) | ((__u32)l4[6] << 8) | l4[7];
	} else if (k->proto == PF_IPPROTO_UDP) {
		if (l4_len < 8)
			return 0;
	} else {
		return 0;
	}
	b->fp = pf_fingerprint_of(k->proto, seq, b->ip_id, pkt_len);
	k->saddr[0] = ip->saddr;
	k->daddr[0] = ip->daddr;
	k->reason = reason;
	k->hook = hook;
	k->family = 4;
	k->sport = (l4[0] << 8) | l4[1];
	k->dport = (l4[2] << 8) | l4[3];
	if (watched == PF_WATCHED_DPORT)
		k->sport = 0;
	else if (watched == PF_WATCHED_SPORT)
		k->dport = 0;
	/* The host filter as pf_host_ok() applies it to TCP and UDP; a packet it
	 * refuses may still be tracked: the full path decides. */
	if (PF_FILTER_HOSTS && !pf_addr_watched((const __u8 *)k->saddr, 16) &&
	    !pf_addr_watched((const __u8 *)k->daddr, 16))
		return 0;
	return 1;
}

/* Count a brief and decide; `skb`: noted for tracking when it entered (tc
 * ingress), as the full path would note it, sampled out or not. */
static __always_inline int pf_early_pick(struct pf_brief *b, __u64 skb)
{
	if (b->k.hook == PF_HOOK_TC_INGRESS)
		pf_track_note(skb, b->fp);
	return pf_pick(&b->k, b->ip_id) ? PF_EARLY_PICKED : PF_EARLY_SAMPLED;
}

/* The early path for a frame (XDP, tc) that passed the filter's cheap part:
 * `l4` is the transport header's offset that pf_peek_frame() returned. */
static __always_inline int pf_frame_early(__u8 hook, __u64 skb, void *data, void *data_end,
					  const struct pf_peek *peek, __u32 l4, __u8 watched)
{
	struct pf_brief b = {};
	struct pf_ipv4 ip, *iph;
	__u8 t[20] = {}, *p;

	if (!PF_SAMPLE_AFTER || l4 == PF_NO_L4 || l4 > 18 + 60)
		return PF_EARLY_FULL;
	iph = data + peek->l3;
	/* The fixed IPv4 header, inside the frame. */
	if ((void *)(iph + 1) > data_end)
		return PF_EARLY_FULL;
	__builtin_memcpy(&ip, iph, sizeof(ip));
	if ((ip.ver_ihl >> 4) != 4)
		return PF_EARLY_FULL;
	/* The transport header: 20 bytes (TCP's fixed header) or 8 (UDP's), inside
	 * the frame, as the snap the full path copies would hold them. */
	p = data + l4;
	if (ip.protocol == PF_IPPROTO_TCP) {
		if ((void *)(p + 20) > data_end)
			return PF_EARLY_FULL;
		__builtin_memcpy(t, p, 20);
	} else {
		if ((void *)(p + 8) > data_end)
			return PF_EARLY_FULL;
		__builtin_memcpy(t, p, 8);
	}
	if (!pf_brief_ipv4(&b, &ip, t, hook, 0, watched))
		return PF_EARLY_FULL;
	return pf_early_pick(&b, skb);
}

/* XDP and tc: the filter's cheap part first, on what pf_peek_frame() read into
 * the stack; a refused packet costs the parse and nothing else, unless tc knows
 * its skb as tracked (its tuple rewritten since it matched: one hash lookup, and
 * only while something is tracked). Then the event: network fields, the snap,
 * the rest of the filter. `skb` is tc's sk_buff address, 0 at XDP. Returns 1
 * when the event was sent because it matched the filter. */
static __always_inline int pf_frame(__u8 hook, __u32 ifindex, __u64 skb, void *data,
				    void *data_end)
{
	struct pf_peek p = {};
	struct pf_event *e;
	__u32 l4 = pf_peek_frame(data, data_end, &p), fp = 0;
	__u8 watched = 0;
	int ok, found = -1, early = PF_EARLY_FULL;

	if (!l4)
		return 0;
	ok = pf_peek_ok(&p, &watched);
	if (!ok) {
		fp = pf_track_find_frame(skb, &found);
		if (!found)
			return 0;
	} else {
		early = pf_frame_early(hook, skb, data, data_end, &p, l4, watched);
		if (early == PF_EARLY_SAMPLED)
			return 1;
	}
	e = pf_new_event(hook);
	if (!e)
		return 0;
	e->ifindex = ifindex;
	e->skb = skb;
	pf_fill_frame(e, data, data_end);
	e->sport = p.sport;
	e->dport = p.dport;
	e->icmp_type = p.icmp_type;
	e->icmp_code = p.icmp_code;
	e->watched_port = watched;
	if (l4 != PF_NO_L4)
		pf_copy_snap(e, data, data_end, l4);
	if (hook != PF_HOOK_TC_EGRESS)  /* an arrival: its checksum as it came */
		e->csum_verdict = pf_csum_verdict(e);
	if (early == PF_EARLY_PICKED) {  /* counted, and noted if it entered */
		pf_send(e);
		return 1;
	}
	if (ok && pf_host_ok(e)) {
		/* Entering and matching: followed by its skb from here on (track.h). */
		if (hook == PF_HOOK_TC_INGRESS)
			pf_track_start(e);
		pf_submit(e);
		return 1;
	}
	if (found < 0)
		fp = pf_track_find_frame(skb, &found);
	if (!pf_track_match(e, found, fp))
		return 0;
	pf_submit(e);
	return 0;
}

#endif
