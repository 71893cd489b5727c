/* Following a packet by its sk_buff once it has matched the filter.
 *
 * NAT rewrites the addresses and ports the filter compares: a SYN to :8100 that
 * DNAT sends on to 172.30.0.2:80 stops matching after PREROUTING. tc ingress
 * notes the address of every skb that matched (tc's context is the kernel's
 * sk_buff itself), and the later hooks keep an skb found here even when its
 * tuple no longer matches, marking the event `tracked`.
 *
 * The map is an LRU: an skb freed where no tracepoint fires leaves its entry
 * behind until newer ones push it out. Freed memory is reused, so an entry also
 * holds a fingerprint of the packet (TCP sequence number, else IPv4 id and
 * length), which NAT leaves alone: an skb reused for another packet does not
 * match it.
 */
#ifndef PKTFATE_TRACK_H
#define PKTFATE_TRACK_H

#include "event.h"
#include "parse.h"

#if PF_TRACK
BPF_TABLE("lru_hash", __u64, __u32, pf_track, PF_TRACK_ENTRIES);
/* How many skbs were noted and not yet forgotten: while it is 0, which is most
 * of the time on a host whose traffic the filter refuses, the hooks that every
 * packet of the host passes skip the hash lookup. It can only count too many
 * (the LRU drops entries without telling), never too few: an entry is forgotten
 * only when a lookup found it. */
BPF_ARRAY(pf_track_live, __u64, 1);

static __always_inline int pf_track_idle(void)
{
	int zero = 0;
	__u64 *live = pf_track_live.lookup(&zero);

	return !live || *live == 0;
}

static __always_inline void pf_track_live_add(__s64 delta)
{
	int zero = 0;
	__u64 *live = pf_track_live.lookup(&zero);

	if (live)
		__sync_fetch_and_add(live, delta);
}
#endif

static __always_inline __u32 pf_fingerprint(const struct pf_event *e)
{
	if (e->proto == PF_IPPROTO_TCP)
		return e->seq;
	return ((__u32)e->ip_id << 16) | (e->pkt_len & 0xFFFF);
}

/* The fingerprint noted for this skb, or 0 with *found left 0. One hash lookup
 * on the address: cheaper than the reads that tell an skb's namespace. */
static __always_inline __u32 pf_track_find(__u64 skb, int *found)
{
#if PF_TRACK
	__u32 *fp;

	if (pf_track_idle()) {
		*found = 0;
		return 0;
	}
	fp = pf_track.lookup(&skb);
	if (fp) {
		*found = 1;
		return *fp;
	}
#endif
	*found = 0;
	return 0;
}

/* Note a packet that matched where it entered. */
static __always_inline void pf_track_start(const struct pf_event *e)
{
#if PF_TRACK
	__u64 skb = e->skb;
	__u32 fp = pf_fingerprint(e);

	if (skb && pf_track.update(&skb, &fp) == 0)
		pf_track_live_add(1);
#endif
}

/* The skb is gone (freed or consumed): its address may now hold another packet. */
static __always_inline void pf_track_forget(__u64 skb)
{
#if PF_TRACK
	if (pf_track.delete(&skb) == 0)
		pf_track_live_add(-1);
#endif
}

/* Whether an event that the filter refused is a tracked packet after a rewrite. */
static __always_inline int pf_track_match(struct pf_event *e, int found, __u32 fp)
{
	if (found && fp == pf_fingerprint(e))
		e->tracked = 1;
	return e->tracked;
}

/* tc: the fingerprint of a frame's skb if it is tracked (XDP, skb 0, has none). */
static __always_inline __u32 pf_track_find_frame(__u64 skb, int *found)
{
	if (!skb) {
		*found = 0;
		return 0;
	}
	return pf_track_find(skb, found);
}

#endif
