/* skb:consume_skb: the kernel is done with a packet it delivered or sent. Only
 * loaded when tracking: a tracked skb's entry goes with it, before the memory
 * is reused. Busy hosts fire this for every packet, so it costs one lookup on
 * the address and nothing more for packets that are not tracked. */

TRACEPOINT_PROBE(skb, consume_skb)
{
	__u64 skb = (__u64)args->skbaddr;
	int tracked = 0;

	pf_track_find(skb, &tracked);
	if (tracked)
		pf_track_forget(skb);
	return 0;
}
