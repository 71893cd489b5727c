/* icmp:icmp_send: the kernel answers a packet with an ICMP error (port
 * unreachable, fragmentation needed, time exceeded...). The event describes the
 * packet that provoked it; icmp_type and icmp_code hold the answer. */

#if PF_HAVE_ICMP_SEND
TRACEPOINT_PROBE(icmp, icmp_send)
{
	struct pf_event *e = pf_skb_event(PF_HOOK_ICMP_SEND, (__u64)args->skbaddr, 0);

	if (!e)
		return 0;
	e->icmp_type = args->type;
	e->icmp_code = args->code;
	if (pf_keep(e))
		pf_submit(e);
	return 0;
}
#endif
