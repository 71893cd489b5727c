/* tc clsact: packets entering the stack (ingress) and leaving it (egress), the
 * host's own answers included. Observes only: every path returns TC_ACT_UNSPEC,
 * which leaves the verdict to whatever comes next. */

#define PF_TC_ACT_UNSPEC (-1)

static __always_inline int pf_tc(struct __sk_buff *skb, __u8 hook)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct pf_event *e = pf_new_event(hook);

	/* Only the linear part is parsed: pulling the rest in would change the skb,
	 * and an observer must not. Headers are linear in practice. */
	if (!e)
		return PF_TC_ACT_UNSPEC;
	e->ifindex = skb->ifindex;
	e->skb = (__u64)(long)skb;  /* tc's context is the kernel's sk_buff itself */
	/* Entering and matching: follow it by its skb from here on (track.h). */
	if (pf_frame_event(e, data, data_end) && hook == PF_HOOK_TC_INGRESS)
		pf_track_start(e);
	return PF_TC_ACT_UNSPEC;
}

int pf_tc_ingress(struct __sk_buff *skb)
{
	return pf_tc(skb, PF_HOOK_TC_INGRESS);
}

int pf_tc_egress(struct __sk_buff *skb)
{
	return pf_tc(skb, PF_HOOK_TC_EGRESS);
}
