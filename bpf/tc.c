/* tc: packets entering the stack (ingress) and leaving it (egress), the host's
 * own answers included. Observes only: every path returns TC_ACT_UNSPEC (to a
 * tcx link the same -1 is TCX_NEXT), which leaves the verdict to whatever comes
 * next.
 *
 * Only the linear part is parsed: pulling the rest in would change the skb, and
 * an observer must not. Headers are linear in practice. tc's context is the
 * kernel's sk_buff itself, whose address tracking keys on. */

#define PF_TC_ACT_UNSPEC (-1)

int pf_tc_ingress(struct __sk_buff *skb)
{
	pf_frame(PF_HOOK_TC_INGRESS, skb->ifindex, (__u64)(long)skb,
		 (void *)(long)skb->data, (void *)(long)skb->data_end);
	return PF_TC_ACT_UNSPEC;
}

int pf_tc_egress(struct __sk_buff *skb)
{
	pf_frame(PF_HOOK_TC_EGRESS, skb->ifindex, (__u64)(long)skb,
		 (void *)(long)skb->data, (void *)(long)skb->data_end);
	return PF_TC_ACT_UNSPEC;
}
