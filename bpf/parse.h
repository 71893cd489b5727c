/* Packet parsing shared by every hook.
 *
 * Two ways in, one way out: XDP and tc parse the frame with direct packet access
 * (every read preceded by a bounds check against data_end, as the verifier
 * demands); tracepoints copy the headers out of a kernel sk_buff with
 * bpf_probe_read_kernel at offsets from BTF. Both fill the same pf_event, and
 * both leave the transport header in e->snap, which pf_parse_l4() decodes.
 */
#ifndef PKTFATE_PARSE_H
#define PKTFATE_PARSE_H

#include "event.h"

#define PF_ETH_P_IP 0x0800
#define PF_ETH_P_IPV6 0x86DD
/* The same as skb->protocol holds them (network byte order), for programs that
 * read the skb itself rather than a tracepoint's record of it. */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define PF_BE16(x) ((__u16)((((x) & 0xFF) << 8) | (((x) >> 8) & 0xFF)))
#else
#define PF_BE16(x) ((__u16)(x))
#endif
#define PF_ETH_P_IP_BE PF_BE16(PF_ETH_P_IP)
#define PF_ETH_P_IPV6_BE PF_BE16(PF_ETH_P_IPV6)
#define PF_ETH_P_8021Q 0x8100
#define PF_ETH_P_8021AD 0x88A8
#define PF_IPPROTO_ICMP 1
#define PF_IPPROTO_TCP 6
#define PF_IPPROTO_UDP 17
#define PF_IPPROTO_ICMPV6 58

struct pf_ipv4 {
	__u8 ver_ihl;
	__u8 tos;
	__u16 tot_len;
	__u16 id;
	__u16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__u32 saddr;
	__u32 daddr;
};

struct pf_ipv6 {
	__u32 ver_tc_flow;
	__u16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u32 saddr[4];
	__u32 daddr[4];
};

/* Fill the network-layer fields from an IPv4 header already known to be whole.
 * Returns the IPv4 header length in bytes, or 0 when there is no transport
 * header to look at (a non-first fragment, or a malformed header). */
static __always_inline __u32 pf_fill_ipv4(struct pf_event *e, const struct pf_ipv4 *ip)
{
	__u32 ihl = (ip->ver_ihl & 0x0F) * 4;

	e->family = 4;
	e->proto = ip->protocol;
	e->ttl = ip->ttl;
	e->ip_id = bpf_ntohs(ip->id);
	e->pkt_len = bpf_ntohs(ip->tot_len);
	e->saddr[0] = ip->saddr;
	e->daddr[0] = ip->daddr;
	if (ihl < 20 || (bpf_ntohs(ip->frag_off) & 0x1FFF))
		return 0;
	if (e->pkt_len > ihl)
		e->l4_len = e->pkt_len - ihl;
	return ihl;
}

/* The same for IPv6. Extension headers are not walked: a packet whose first
 * next-header is not TCP, UDP or ICMPv6 keeps its addresses but no ports. */
static __always_inline __u32 pf_fill_ipv6(struct pf_event *e, const struct pf_ipv6 *ip)
{
	e->family = 6;
	e->proto = ip->nexthdr;
	e->ttl = ip->hop_limit;
	e->l4_len = bpf_ntohs(ip->payload_len);
	e->pkt_len = e->l4_len + 40;
	__builtin_memcpy(e->saddr, ip->saddr, 16);
	__builtin_memcpy(e->daddr, ip->daddr, 16);
	return 40;
}

/* Decode the transport header that was copied into e->snap. Offsets are fixed
 * and below PF_SNAP_LEN, so the verifier sees only constant stack offsets. */
static __always_inline void pf_parse_l4(struct pf_event *e)
{
	const __u8 *s = e->snap;

	if (e->proto == PF_IPPROTO_TCP && e->snap_len >= 20) {
		e->sport = (s[0] << 8) | s[1];
		e->dport = (s[2] << 8) | s[3];
		e->seq = ((__u32)s[4] << 24) | ((__u32)s[5] << 16) | ((__u32)s[6] << 8) | s[7];
		e->ack_seq = ((__u32)s[8] << 24) | ((__u32)s[9] << 16) | ((__u32)s[10] << 8) | s[11];
		e->tcp_flags = s[13] & 0x3F;
		e->l4_csum = (s[16] << 8) | s[17];
	} else if (e->proto == PF_IPPROTO_UDP && e->snap_len >= 8) {
		e->sport = (s[0] << 8) | s[1];
		e->dport = (s[2] << 8) | s[3];
		e->l4_csum = (s[6] << 8) | s[7];
	} else if ((e->proto == PF_IPPROTO_ICMP || e->proto == PF_IPPROTO_ICMPV6) &&
		   e->snap_len >= 8) {
		e->icmp_type = s[0];
		e->icmp_code = s[1];
		e->l4_csum = (s[2] << 8) | s[3];
		/* identifier and sequence of echo messages, so replies pair with requests */
		e->sport = (s[4] << 8) | s[5];
		e->dport = (s[6] << 8) | s[7];
	}
}

/* Copy the start of the transport header into e->snap by direct packet access
 * and decode it. Each byte is bounds-checked against data_end before it is read;
 * the copy also stops at the IP packet's end, so Ethernet padding is left out. */
static __always_inline void pf_copy_snap(struct pf_event *e, void *data, void *data_end,
					 __u32 l4_off)
{
	__u8 *p;
	__u32 i, limit = e->l4_len;

	if (l4_off > 18 + 60)  /* at most a VLAN tag and a 60-byte IPv4 header */
		return;
	p = data + l4_off;
#pragma unroll
	for (i = 0; i < PF_SNAP_LEN; i++) {
		__u8 *byte = p + i;

		/* Keep the compiler from folding the check into arithmetic on
		 * data_end, which the verifier refuses. */
		asm volatile("" : "+r"(byte));
		if (i >= limit || (void *)(byte + 1) > data_end)
			break;
		e->snap[i] = *byte;
	}
	e->snap_len = i;
	pf_parse_l4(e);
}

/* A one's-complement sum folded to 16 bits, every carry added back in. */
static __always_inline __u16 pf_csum_fold(__u64 sum)
{
	sum = (sum & 0xFFFFFFFF) + (sum >> 32);
	sum = (sum & 0xFFFF) + (sum >> 16);
	sum = (sum & 0xFFFF) + (sum >> 16);
	return (sum & 0xFFFF) + (sum >> 16);
}

/* What an arriving TCP or UDP packet's own checksum says (enum pf_csum), from the
 * event's fields and its snap, which pf_copy_snap() left zero past snap_len (a
 * zero adds nothing: an odd length is padded as the checksum pads it). The sums
 * are bpf_csum_diff()'s: the one's-complement sum of the bytes as they lie in
 * memory, so the pseudo-header's protocol and length words and the field are
 * taken in that order too (bpf_htons), and a correct segment folds to 0xFFFF in
 * either. Frames only (XDP, tc): the helper is theirs. */
static __always_inline __u8 pf_csum_verdict(struct pf_event *e)
{
	__u32 addrs, all;
	__u64 words;
	__u16 pseudo, field;

	if ((e->proto != PF_IPPROTO_TCP && e->proto != PF_IPPROTO_UDP) || !e->snap_len)
		return PF_CSUM_NONE;
	if (e->proto == PF_IPPROTO_UDP && e->l4_csum == 0 && e->family == 4)
		return PF_CSUM_GOOD;  /* UDP over IPv4 may go without one */
	/* The pseudo-header: both addresses as the event holds them (32 bytes, an
	 * IPv4 address's last 12 zero), then protocol and length, a word each.
	 * The helper's result is taken as 32 bits whatever its sign: bcc declares it
	 * int, and kernels that return the sum unfolded (Debian's 6.12 does; later
	 * ones fold it to 16 bits, which adds up alike) give a negative int for every
	 * sum with its top bit set. Its only error, a size that is no multiple of 4
	 * or too large, cannot happen with these constant sizes. */
	addrs = (__u32)bpf_csum_diff(0, 0, (void *)e->saddr, 2 * sizeof(e->saddr), 0);
	words = (__u64)bpf_htons((__u16)e->proto) + bpf_htons(e->l4_len);
	pseudo = pf_csum_fold((__u64)addrs + words);
	field = bpf_htons(e->l4_csum);  /* as it lies in the packet */
	if (e->snap_len < e->l4_len)  /* not all of the segment was seen */
		return field == pseudo ? PF_CSUM_PSEUDO : PF_CSUM_UNCHECKED;
	all = (__u32)bpf_csum_diff(0, 0, (void *)e->snap, PF_SNAP_LEN, addrs);
	if (pf_csum_fold((__u64)all + words) == 0xFFFF)
		return PF_CSUM_GOOD;
	return field == pseudo ? PF_CSUM_PSEUDO : PF_CSUM_BAD;
}

/* What the cheap part of the filter looks at: protocol and ports (TCP, UDP) or
 * type (ICMP), read into the program's stack so that a packet the filter turns
 * away never touches event memory, maps or the ring buffer. */
struct pf_peek {
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 l3;  /* frames: the IP header's offset (after Ethernet and a VLAN tag) */
};

/* Ports or ICMP type and code from the first 4 bytes of a transport header. */
static __always_inline void pf_peek_ports(struct pf_peek *p, const __u8 *l4)
{
	if (p->proto == PF_IPPROTO_TCP || p->proto == PF_IPPROTO_UDP) {
		p->sport = (l4[0] << 8) | l4[1];
		p->dport = (l4[2] << 8) | l4[3];
	} else {
		p->icmp_type = l4[0];
		p->icmp_code = l4[1];
	}
}

/* The offset of an Ethernet frame's IP header and its EtherType (direct packet
 * access), or 0 when the frame carries no IP packet. */
static __always_inline __u32 pf_frame_l3(void *data, void *data_end, __u16 *ethertype)
{
	__u8 *eth = data;
	__u32 off = 14;
	__u16 proto;

	/* Ethernet header: 6 + 6 bytes of MAC addresses, then the EtherType. */
	if (data + 14 > data_end)
		return 0;
	proto = (eth[12] << 8) | eth[13];
	/* One VLAN tag: 4 more bytes, the real EtherType at their end. */
	if (proto == PF_ETH_P_8021Q || proto == PF_ETH_P_8021AD) {
		if (data + 18 > data_end)
			return 0;
		proto = (eth[16] << 8) | eth[17];
		off = 18;
	}
	if (proto != PF_ETH_P_IP && proto != PF_ETH_P_IPV6)
		return 0;
	*ethertype = proto;
	return off;
}

/* The filter's view of a frame, before anything else is done with it. Returns
 * the transport header's offset, PF_NO_L4 when there is none to read (a later
 * fragment: no ports), or 0 when the frame carries no IP packet. */
#define PF_NO_L4 1
static __always_inline __u32 pf_peek_frame(void *data, void *data_end, struct pf_peek *p)
{
	__u16 type = 0;
	__u32 off = pf_frame_l3(data, data_end, &type), l4;
	__u8 *t;

	if (!off)
		return 0;
	p->l3 = off;
	if (type == PF_ETH_P_IP) {
		struct pf_ipv4 *ip = data + off;
		__u32 ihl;

		/* The fixed 20-byte IPv4 header must be inside the frame. */
		if ((void *)(ip + 1) > data_end)
			return 0;
		ihl = (ip->ver_ihl & 0x0F) * 4;
		p->proto = ip->protocol;
		if (ihl < 20 || (bpf_ntohs(ip->frag_off) & 0x1FFF))
			return PF_NO_L4;
		l4 = off + ihl;
	} else {
		struct pf_ipv6 *ip6 = data + off;

		/* The fixed 40-byte IPv6 header must be inside the frame. */
		if ((void *)(ip6 + 1) > data_end)
			return 0;
		p->proto = ip6->nexthdr;
		l4 = off + 40;
	}
	if (l4 > 18 + 60)  /* at most a VLAN tag and a 60-byte IPv4 header */
		return PF_NO_L4;
	t = data + l4;
	/* The 4 bytes read must be inside the frame. */
	if ((void *)(t + 4) > data_end)
		return PF_NO_L4;
	pf_peek_ports(p, t);
	return l4;
}

/* Fill e's network-layer fields from a frame that pf_peek_frame() accepted. */
static __always_inline void pf_fill_frame(struct pf_event *e, void *data, void *data_end)
{
	__u16 type = 0;
	__u32 off = pf_frame_l3(data, data_end, &type);

	if (!off)
		return;
	if (type == PF_ETH_P_IP) {
		struct pf_ipv4 *ip = data + off;

		if ((void *)(ip + 1) <= data_end)
			pf_fill_ipv4(e, ip);
	} else {
		struct pf_ipv6 *ip6 = data + off;

		if ((void *)(ip6 + 1) <= data_end)
			pf_fill_ipv6(e, ip6);
	}
}

#endif
