/* XDP: every frame as it arrives at the driver, before the stack sees it.
 * Observes only: every path returns XDP_PASS. */

int pf_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	pf_frame(PF_HOOK_XDP, ctx->ingress_ifindex, 0, data, data_end);
	return XDP_PASS;
}
