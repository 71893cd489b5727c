/* TCP tracepoints: a segment with a wrong checksum, and the kernel's own RSTs. */

#if PF_HAVE_TCP_BAD_CSUM
/* Two forms, as kfree_skb.c: the BTF-typed raw tracepoint (PF_TCP_BAD_CSUM_RAW,
 * args[0] the segment) where the kernel has it, else the regular one. */
static __always_inline int pf_on_tcp_bad_csum(__u64 skb, const int direct)
{
	struct pf_event *e = pf_skb_event(PF_HOOK_TCP_BAD_CSUM, skb, 0, direct);

	if (!e)
		return 0;
	if (pf_keep(e))
		pf_submit(e);
	return 0;
}

#if PF_TCP_BAD_CSUM_RAW
int pf_tcp_bad_csum_raw(struct bpf_raw_tracepoint_args *ctx)
{
	return pf_on_tcp_bad_csum(ctx->args[0], 1);
}
#endif

TRACEPOINT_PROBE(tcp, tcp_bad_csum)
{
	return pf_on_tcp_bad_csum((__u64)args->skbaddr, 0);
}
#endif

/* Addresses and port from the tracepoint's sockaddr_in/sockaddr_in6 copy:
 * family at 0, port (network order) at 2, IPv4 address at 4, IPv6 at 8. */
static __always_inline void pf_from_sockaddr(const __u8 *sa, __u32 *addr, __u16 *port,
					     __u8 *family)
{
	__u16 fam = 0;

	__builtin_memcpy(&fam, sa, 2);
	*port = (sa[2] << 8) | sa[3];
	if (fam == 2) {
		*family = 4;
		__builtin_memcpy(addr, sa + 4, 4);
	} else if (fam == 10) {
		*family = 6;
		__builtin_memcpy(addr, sa + 8, 16);
	}
}

#if PF_HAVE_TCP_SEND_RESET
/* With an skb the RST answers that incoming packet, and the event describes it
 * (so it pairs with its arrival); without one a socket aborted its connection,
 * and the event describes the RST itself, local address first. */
TRACEPOINT_PROBE(tcp, tcp_send_reset)
{
	struct pf_event *e;
	__u8 sa[28], da[28];

	if (args->skbaddr) {
		e = pf_skb_event(PF_HOOK_TCP_SEND_RESET, (__u64)args->skbaddr,
				 (__u64)args->skaddr, 0);
		if (!e)
			return 0;
	} else {
		e = pf_event_in_netns(PF_HOOK_TCP_SEND_RESET,
				      pf_sock_netns((__u64)args->skaddr));
		if (!e)
			return 0;
		__builtin_memcpy(sa, args->saddr, sizeof(sa));
		__builtin_memcpy(da, args->daddr, sizeof(da));
		pf_from_sockaddr(sa, e->saddr, &e->sport, &e->family);
		pf_from_sockaddr(da, e->daddr, &e->dport, &e->family);
		e->proto = PF_IPPROTO_TCP;
		e->tcp_flags = 0x04;
	}
#if PF_RST_HAS_REASON
	e->reason = args->reason;
#endif
	if (pf_keep(e))
		pf_submit(e);
	return 0;
}
#endif
