/* skb:kfree_skb: the kernel freed a packet without delivering it, with the drop
 * reason (PF_HAVE_DROP_REASON) and the code address that freed it. Busy hosts
 * fire this millions of times a second, so the cheapest tests come first. */

TRACEPOINT_PROBE(skb, kfree_skb)
{
	struct pf_event *e;
	__u64 sk_hint = 0, skb = (__u64)args->skbaddr;
	int tracked = 0;
	__u32 fp;

	if (args->protocol != PF_ETH_P_IP && args->protocol != PF_ETH_P_IPV6)
		return 0;
#if PF_KFREE_HAS_RX_SK
	sk_hint = (__u64)args->rx_sk;
#endif
	fp = pf_track_find(skb, &tracked);
	if (tracked)
		pf_track_forget(skb);  /* freed: the address may soon hold another packet */
	e = pf_skb_event_tracked(PF_HOOK_KFREE_SKB, skb, sk_hint, tracked, fp);
	if (!e)
		return 0;
	e->location = (__u64)args->location;
#if PF_HAVE_DROP_REASON
	e->reason = args->reason;
#endif
	if (pf_keep(e))
		pf_submit(e);
	return 0;
}
