/* sock:inet_sock_set_state: TCP connections opening and closing. An accepted
 * connection (SYN_RECV -> ESTABLISHED) is the proof that a SYN was delivered. */

#if PF_HAVE_SOCK_STATE
TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
	struct pf_event *e;
	__u8 watched;

	if (args->protocol != PF_IPPROTO_TCP ||
	    !pf_l4_ok(PF_IPPROTO_TCP, args->sport, args->dport, 0, &watched))
		return 0;
	e = pf_event_in_netns(PF_HOOK_SOCK_STATE, pf_sock_netns((__u64)args->skaddr));
	if (!e)
		return 0;
	e->proto = PF_IPPROTO_TCP;
	e->sport = args->sport;
	e->dport = args->dport;
	e->state_old = args->oldstate;
	e->state_new = args->newstate;
	if (args->family == 2) {
		e->family = 4;
		__builtin_memcpy(e->saddr, args->saddr, 4);
		__builtin_memcpy(e->daddr, args->daddr, 4);
	} else {
		e->family = 6;
		__builtin_memcpy(e->saddr, args->saddr_v6, 16);
		__builtin_memcpy(e->daddr, args->daddr_v6, 16);
	}
	if (pf_wanted(e))
		pf_submit(e);
	return 0;
}
#endif
