/* XDP: every frame as it arrives at the driver, before the stack sees it.
 * Observes only: every path returns XDP_PASS. */

int pf_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct pf_event *e = pf_new_event(PF_HOOK_XDP);

	if (e) {
		e->ifindex = ctx->ingress_ifindex;
		pf_frame_event(e, data, data_end);
	}
	return XDP_PASS;
}
