/* skb:consume_skb: the kernel is done with a packet it delivered or sent. Only
 * loaded when tracking: a tracked skb's entry goes with it, before the memory
 * is reused. Busy hosts fire this for every packet delivered or sent, so it costs
 * one lookup on the address and nothing more for packets that are not tracked.
 *
 * Two forms, like kfree_skb.c: the BTF-typed raw tracepoint (PF_CONSUME_RAW),
 * for which the kernel fills no trace record, and the regular one. */

static __always_inline int pf_on_consume_skb(__u64 skb)
{
	int tracked = 0;

	pf_track_take(skb, &tracked);
	return 0;
}

#if PF_CONSUME_RAW
int pf_consume_skb_raw(struct bpf_raw_tracepoint_args *ctx)
{
	return pf_on_consume_skb(ctx->args[0]);
}
#endif

TRACEPOINT_PROBE(skb, consume_skb)
{
	return pf_on_consume_skb((__u64)args->skbaddr);
}
