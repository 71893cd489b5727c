/* skb:kfree_skb: the kernel freed a packet without delivering it, with the drop
 * reason (PF_HAVE_DROP_REASON) and the code address that freed it. Busy hosts
 * fire this millions of times a second, so the cheapest tests come first.
 *
 * Two forms of the same hook; the loader attaches one (tracer/attach/loader.py).
 * Where the kernel has BTF (5.5 and later), the BTF-typed raw tracepoint
 * (PF_KFREE_RAW): no trace record is filled before the program runs, and the skb
 * arrives as a pointer whose type the verifier knows, so its fields are plain
 * loads (a fault reads 0) instead of helper calls. Elsewhere, or with
 * --no-links, the regular tracepoint and its record. */

/* Everything after the arguments. `direct`: skb's own fields may be loaded
 * directly (the raw form); a constant, so each form compiles its own path. */
static __always_inline int pf_on_kfree_skb(__u64 skb, __u64 location, __u32 reason,
					   __u64 sk_hint, const int direct)
{
	struct pf_event *e;
	int tracked = 0, picked = 0;
	__u32 fp;

	fp = pf_track_take(skb, &tracked);  /* freed: the address may soon hold another */
	/* Sampling decided before the fill (filter.h, the early path): under a flood
	 * most drops are counted and no more. */
	e = pf_skb_event_from(PF_HOOK_KFREE_SKB, skb, sk_hint, tracked, fp, direct, reason,
			      &picked);
	if (!e)
		return 0;
	e->location = location;
	e->reason = reason;
	if (picked)
		pf_send(e);
	else if (pf_keep(e))
		pf_submit(e);
	return 0;
}

#if PF_KFREE_RAW
/* args[] as the kernel passes them: the skb, the code address, then (by
 * kernel) the reason and the receiving socket, at the indices the running
 * kernel's BTF gave (-1: not passed). */
int pf_kfree_skb_raw(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 skb = ctx->args[0];
	__u16 protocol = *(volatile __u16 *)(skb + PF_OFF_SKB_PROTOCOL);
	__u32 reason = 0;
	__u64 sk_hint = 0;

	if (protocol != PF_ETH_P_IP_BE && protocol != PF_ETH_P_IPV6_BE)
		return 0;
#if PF_KFREE_RAW_REASON >= 0 && PF_HAVE_DROP_REASON
	reason = (__u32)ctx->args[PF_KFREE_RAW_REASON];
#endif
#if PF_KFREE_RAW_RX_SK >= 0
	sk_hint = ctx->args[PF_KFREE_RAW_RX_SK];
#endif
	return pf_on_kfree_skb(skb, ctx->args[1], reason, sk_hint, 1);
}
#endif

TRACEPOINT_PROBE(skb, kfree_skb)
{
	__u32 reason = 0;
	__u64 sk_hint = 0;

	if (args->protocol != PF_ETH_P_IP && args->protocol != PF_ETH_P_IPV6)
		return 0;
#if PF_KFREE_HAS_RX_SK
	sk_hint = (__u64)args->rx_sk;
#endif
#if PF_HAVE_DROP_REASON
	reason = args->reason;
#endif
	return pf_on_kfree_skb((__u64)args->skbaddr, (__u64)args->location, reason, sk_hint, 0);
}
