/* icmp:icmp_send: the kernel answers a packet with an ICMP error (port
 * unreachable, fragmentation needed, time exceeded...). The event describes the
 * packet that provoked it; icmp_type and icmp_code hold the answer.
 *
 * Two forms, like kfree_skb.c: the BTF-typed raw tracepoint (PF_ICMP_SEND_RAW),
 * for which the kernel fills no trace record (icmp_send's parses the packet's
 * addresses and ports before any program runs) and whose skb is read with plain
 * loads; and the regular one. */

#if PF_HAVE_ICMP_SEND
static __always_inline int pf_on_icmp_send(__u64 skb, __u8 type, __u8 code, const int direct)
{
	struct pf_event *e = pf_skb_event(PF_HOOK_ICMP_SEND, skb, 0, direct);

	if (!e)
		return 0;
	e->icmp_type = type;
	e->icmp_code = code;
	if (pf_keep(e))
		pf_submit(e);
	return 0;
}

#if PF_ICMP_SEND_RAW
/* args[]: the packet answered, the ICMP type, the code. */
int pf_icmp_send_raw(struct bpf_raw_tracepoint_args *ctx)
{
	return pf_on_icmp_send(ctx->args[0], (__u8)ctx->args[1], (__u8)ctx->args[2], 1);
}
#endif

TRACEPOINT_PROBE(icmp, icmp_send)
{
	return pf_on_icmp_send((__u64)args->skbaddr, args->type, args->code, 0);
}
#endif
