/* Reading kernel structs from tracepoints, shared by the watch's programs
 * (skb.h) and the agent's (agent.c).
 *
 * No struct from a kernel header is dereferenced: the headers on disk may
 * describe another kernel. Every member is read at an offset that
 * tracer/kernel/discovery.py took from the running kernel's BTF and passed in
 * as a -D define (PF_OFF_*).
 */
#ifndef PKTFATE_KREAD_H
#define PKTFATE_KREAD_H

static __always_inline __u64 pf_read_ptr(__u64 base, __u32 off)
{
	__u64 val = 0;

	if (base)
		bpf_probe_read_kernel(&val, sizeof(val), (void *)(base + off));
	return val;
}

static __always_inline __u32 pf_read_u32(__u64 base, __u32 off)
{
	__u32 val = 0;

	if (base)
		bpf_probe_read_kernel(&val, sizeof(val), (void *)(base + off));
	return val;
}

/* Inode number of the namespace behind a struct net pointer, 0 if unreadable. */
static __always_inline __u32 pf_net_inum(__u64 net)
{
	return pf_read_u32(net, PF_OFF_NET_INUM);
}

static __always_inline __u32 pf_sock_netns(__u64 sk)
{
	return pf_net_inum(pf_read_ptr(sk, PF_OFF_SK_NET));
}

/* The namespace behind a device pointer. `direct`: the pointer was loaded from a
 * BTF-typed skb (a raw tracepoint's argument), so it is typed too (net_device,
 * then net): the verifier follows the chain as plain loads, and a load that
 * faults reads 0, as a probe read would. Else two probe reads. */
static __always_inline __u32 pf_dev_netns(__u64 dev, const int direct)
{
	__u64 net;

	if (!direct)
		return pf_net_inum(pf_read_ptr(dev, PF_OFF_DEV_NET));
	net = *(volatile __u64 *)(dev + PF_OFF_DEV_NET);
	return net ? *(volatile __u32 *)(net + PF_OFF_NET_INUM) : 0;
}

/* The namespace an skb belongs to: its device's, else its socket's; *dev is
 * set to the device when the namespace came from it (0 otherwise). skb->dev
 * shares a union with dev_scratch once UDP has queued the skb, so a device
 * pointer that cannot be read falls through to the socket (the rare case, read
 * with probe reads either way). `direct` as for pf_dev_netns. */
static __always_inline __u32 pf_skb_netns(__u64 skb, __u64 sk_hint, __u64 *dev,
					  const int direct)
{
	__u32 inum = 0;

	*dev = direct ? *(volatile __u64 *)(skb + PF_OFF_SKB_DEV) :
			pf_read_ptr(skb, PF_OFF_SKB_DEV);
	if (*dev)
		inum = pf_dev_netns(*dev, direct);
	if (!inum) {
		*dev = 0;
		if (sk_hint)
			inum = pf_sock_netns(sk_hint);
	}
	if (!inum)
		inum = pf_sock_netns(pf_read_ptr(skb, PF_OFF_SKB_SK));
	return inum;
}

/* skb->head and skb->network_header. Where they lie within 32 bytes of each
 * other (12 bytes apart on 6.x kernels, the same cache line on every kernel
 * since 3.x), one aligned read fetches both; else two. */
#define PF_SKB_NH_BASE (PF_OFF_SKB_NETWORK_HEADER & ~7)
#if PF_OFF_SKB_HEAD > PF_OFF_SKB_NETWORK_HEADER && (PF_OFF_SKB_HEAD % 8) == 0 && \
	PF_OFF_SKB_HEAD + 8 - PF_SKB_NH_BASE <= 32
static __always_inline __u64 pf_skb_network(__u64 skb)
{
	__u64 w[(PF_OFF_SKB_HEAD + 8 - PF_SKB_NH_BASE) / 8] = {};
	__u16 nh;

	if (bpf_probe_read_kernel(w, sizeof(w), (void *)(skb + PF_SKB_NH_BASE)))
		return 0;
	nh = *(__u16 *)((__u8 *)w + (PF_OFF_SKB_NETWORK_HEADER - PF_SKB_NH_BASE));
	if (!w[(PF_OFF_SKB_HEAD - PF_SKB_NH_BASE) / 8] || nh == 0xFFFF)
		return 0;  /* no buffer, or the network header never set */
	return w[(PF_OFF_SKB_HEAD - PF_SKB_NH_BASE) / 8] + nh;
}
#else
static __always_inline __u64 pf_skb_network(__u64 skb)
{
	__u64 head = pf_read_ptr(skb, PF_OFF_SKB_HEAD);
	__u16 nh = 0;

	bpf_probe_read_kernel(&nh, sizeof(nh), (void *)(skb + PF_OFF_SKB_NETWORK_HEADER));
	if (!head || nh == 0xFFFF)  /* network header never set */
		return 0;
	return head + nh;
}
#endif

/* The same for a BTF-typed skb pointer (a raw tracepoint's argument): the verifier
 * lets the program load the skb's fields itself, so head and network_header are
 * two plain loads, no helper call. */
static __always_inline __u64 pf_skb_network_direct(__u64 skb)
{
	__u64 head = *(volatile __u64 *)(skb + PF_OFF_SKB_HEAD);
	__u16 nh = *(volatile __u16 *)(skb + PF_OFF_SKB_NETWORK_HEADER);

	if (!head || nh == 0xFFFF)  /* no buffer, or the network header never set */
		return 0;
	return head + nh;
}

#endif
