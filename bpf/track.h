/* Following a packet by its sk_buff once it has matched the filter.
 *
 * NAT rewrites the addresses and ports the filter compares: a SYN to :8100 that
 * DNAT sends on to 172.30.0.2:80 stops matching after PREROUTING. tc ingress
 * notes the address of every skb that matched (tc's context is the kernel's
 * sk_buff itself), and the later hooks keep an skb found here even when its
 * tuple no longer matches, marking the event `tracked`.
 *
 * The table is direct-mapped: an skb's address picks one slot, which holds that
 * address and a fingerprint of the packet (TCP sequence number, else IPv4 id and
 * length), which NAT leaves alone. Noting, finding and forgetting are each one
 * array load or store, where a hash map took a lock, an allocation and, for an
 * LRU, list upkeep on every packet that matched (most of what a matching packet
 * cost at tc ingress and kfree_skb). A newer skb whose address picks an occupied
 * slot takes it: the older one is no longer followed, as the oldest gave way in
 * the LRU. An skb freed where no tracepoint fires leaves its slot behind until
 * another takes it; freed memory is reused, and the fingerprint keeps an skb
 * reused for another packet from matching it.
 */
#ifndef PKTFATE_TRACK_H
#define PKTFATE_TRACK_H

#include "event.h"
#include "parse.h"

#if PF_TRACK
#if PF_TRACK_ENTRIES & (PF_TRACK_ENTRIES - 1)
#error "PF_TRACK_ENTRIES is a power of two: an address's slot is its hash's low bits"
#endif
BPF_ARRAY(pf_track, struct pf_track_slot, PF_TRACK_ENTRIES);
/* Set once the first skb is noted: until then, which is for as long as the
 * filter has refused everything, the hooks every packet of the host passes skip
 * the slot (a load from a cold line of a 128 KiB table) for one hot load here. */
BPF_ARRAY(pf_track_used, __u32, 1);

static __always_inline int pf_track_unused(void)
{
	int zero = 0;
	__u32 *used = pf_track_used.lookup(&zero);

	return !used || !*used;
}

/* The verifier allows no arithmetic on the pointers the hooks get the skb as
 * (tc's context, a raw tracepoint's typed argument); a copy read back from map
 * memory is a plain number to it. */
BPF_PERCPU_ARRAY(pf_track_addr, __u64, 1);

/* The slot an skb address picks: the high half of a multiplicative hash (the
 * address's low bits are alignment, the same for every skb). Array lookups are
 * inlined into loads. */
static __always_inline struct pf_track_slot *pf_track_slot_of(__u64 skb)
{
	int zero = 0;
	volatile __u64 *copy = pf_track_addr.lookup(&zero);
	__u32 key;

	if (!copy)
		return 0;
	*copy = skb;
	key = (__u32)((*copy * 0x9E3779B97F4A7C15ULL) >> 32) & (PF_TRACK_ENTRIES - 1);

	return pf_track.lookup(&key);
}
#endif

static __always_inline __u32 pf_fingerprint_of(__u8 proto, __u32 seq, __u16 ip_id,
					       __u32 pkt_len)
{
	if (proto == PF_IPPROTO_TCP)
		return seq;
	return ((__u32)ip_id << 16) | (pkt_len & 0xFFFF);
}

static __always_inline __u32 pf_fingerprint(const struct pf_event *e)
{
	return pf_fingerprint_of(e->proto, e->seq, e->ip_id, e->pkt_len);
}

/* The fingerprint noted for this skb, or 0 with *found left 0: one load and a
 * compare, cheaper than the reads that tell an skb's namespace. `forget`: the
 * skb is gone (freed or consumed), its address may now hold another packet, so
 * a slot found is freed too, in the same visit (a constant: each caller
 * compiles its own path). */
static __always_inline __u32 pf_track_lookup(__u64 skb, int *found, const int forget)
{
#if PF_TRACK
	struct pf_track_slot *slot;

	if (pf_track_unused()) {
		*found = 0;
		return 0;
	}
	slot = pf_track_slot_of(skb);
	if (slot && slot->skb == skb && skb) {
		*found = 1;
		if (forget)
			slot->skb = 0;
		return slot->fp;
	}
#endif
	*found = 0;
	return 0;
}

static __always_inline __u32 pf_track_find(__u64 skb, int *found)
{
	return pf_track_lookup(skb, found, 0);
}

/* pf_track_find() for an skb the kernel is done with: found, it is forgotten. */
static __always_inline __u32 pf_track_take(__u64 skb, int *found)
{
	return pf_track_lookup(skb, found, 1);
}

/* Note a packet that matched where it entered, by its skb and fingerprint. */
static __always_inline void pf_track_note(__u64 skb, __u32 fp)
{
#if PF_TRACK
	struct pf_track_slot *slot;

	if (!skb)
		return;
	slot = pf_track_slot_of(skb);
	if (slot) {
		slot->fp = fp;
		slot->skb = skb;
	}
	if (pf_track_unused()) {  /* read first: one write ever, not one per packet */
		int zero = 0;
		__u32 one = 1;

		pf_track_used.update(&zero, &one);
	}
#endif
}

static __always_inline void pf_track_start(const struct pf_event *e)
{
	pf_track_note(e->skb, pf_fingerprint(e));
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
