/* The one record every pktfate hook sends to user space.
 *
 * Flat and fixed-width, each member at its natural alignment, padding spelled
 * out: the layout is the same on every compiler and needs no packing. The
 * members that change from packet to packet come first, those a flow's events
 * share next, in one span. tracer/decode/raw.py mirrors it with ctypes and
 * tests/unit/test_event_layout.py checks the two agree.
 */
#ifndef PKTFATE_EVENT_H
#define PKTFATE_EVENT_H

#define PF_SNAP_LEN 64
#define PF_WATCHED_DPORT 1
#define PF_WATCHED_SPORT 2

/* Where an event was seen. Values are part of the Python mirror (decode.HOOKS). */
enum pf_hook {
	PF_HOOK_XDP = 1,           /* frame arrived at the driver */
	PF_HOOK_TC_INGRESS = 2,    /* packet entering the stack */
	PF_HOOK_TC_EGRESS = 3,     /* packet leaving through an interface */
	PF_HOOK_KFREE_SKB = 4,     /* the kernel dropped it (reason, location) */
	PF_HOOK_TCP_BAD_CSUM = 5,  /* TCP found a wrong checksum */
	PF_HOOK_TCP_SEND_RESET = 6,/* the kernel answered with a RST */
	PF_HOOK_ICMP_SEND = 7,     /* the kernel answered with an ICMP error */
	PF_HOOK_SOCK_STATE = 8,    /* a TCP socket changed state */
};

/* What an arriving TCP or UDP packet's own checksum says (pf_event.csum_verdict),
 * judged where the packet is (parse.h, pf_csum_verdict). Values are part of the
 * Python mirror (decode.raw.CsumVerdict). */
enum pf_csum {
	PF_CSUM_NONE = 0,       /* not judged: not an arrival, not TCP or UDP, no header */
	PF_CSUM_GOOD = 1,       /* the whole segment sums right (or UDP over IPv4 sent none) */
	PF_CSUM_BAD = 2,        /* the whole segment was seen and does not sum right */
	PF_CSUM_PSEUDO = 3,     /* the field holds only the pseudo-header sum: the sender
				 * left the checksum to offload and nothing completed it */
	PF_CSUM_UNCHECKED = 4,  /* longer than the snap, and not the offload signature */
};

struct pf_event {
	/* What changes from one packet to the next. */
	__u64 ts_ns;           /* bpf_ktime_get_ns() */
	__u64 skb;             /* kernel sk_buff address, 0 where there is none */
	__u32 seq;             /* TCP sequence number, host order */
	__u32 ack_seq;         /* TCP acknowledgement number, host order */
	__u32 pkt_len;         /* IP total length (header included) */
	__u16 ip_id;           /* IPv4 identification, 0 for IPv6 */
	__u16 l4_csum;         /* checksum field as found in the TCP/UDP/ICMP header */
	__u16 l4_len;          /* bytes of transport header and payload */
	__u8 ttl;              /* IPv4 TTL or IPv6 hop limit */
	__u8 csum_verdict;     /* arrivals of TCP and UDP: enum pf_csum (parse.h) */
	/* What every event of one hook, flow, reason and place shares, from netns to
	 * snap: one contiguous span, which user space reads as one string and keys
	 * the event's shape by (tracer/decode/events.py). Nothing per packet here. */
	__u32 netns;           /* network namespace inode number, 0 if unknown */
	__u64 location;        /* kfree_skb: code address that freed the skb */
	__u32 saddr[4];        /* IPv4 in saddr[0], network byte order */
	__u32 daddr[4];
	__u32 ifindex;         /* interface the event was seen on, 0 if unknown */
	__u32 reason;          /* drop reason (kfree_skb) or reset reason */
	__u16 sport;           /* host order; ICMP echo: identifier */
	__u16 dport;           /* host order; ICMP echo: sequence */
	__u16 snap_len;        /* bytes of snap[] that hold packet data */
	__u8 hook;             /* enum pf_hook */
	__u8 family;           /* 4 or 6 */
	__u8 proto;            /* IPPROTO_* */
	__u8 tcp_flags;        /* FIN=1 SYN=2 RST=4 PSH=8 ACK=16 URG=32 */
	__u8 icmp_type;        /* ICMP header, or icmp_send's answer type */
	__u8 icmp_code;
	__u8 state_old;        /* sock state change: TCP states (TCP_ESTABLISHED = 1...) */
	__u8 state_new;
	__u8 watched_port;     /* filter's note: PF_WATCHED_DPORT or PF_WATCHED_SPORT */
	__u8 tracked;          /* 1: kept by its skb (track.h), its tuple no longer matching */
	/* The end of the shared span; 8-byte aligned. */
	__u8 snap[PF_SNAP_LEN];/* first bytes of the transport header */
};

/* What the kernel counts exactly, whatever reaches user space: one entry per
 * hook, reason and flow, the flow named by its watched port only (a flood from
 * many source ports is one entry). Flat, largest members first, padded. */
struct pf_agg_key {
	__u32 saddr[4];
	__u32 daddr[4];
	__u32 reason;
	__u16 sport;
	__u16 dport;
	__u8 hook;
	__u8 family;
	__u8 proto;
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 _pad[3];
};

/* One hook's hot aggregation entry on one CPU (bpf/filter.h, pf_aggregate): the
 * key that hook counts most there and that CPU's whole count for it. pf_agg's
 * own per-CPU slot for the key lags until another key takes its place here; user
 * space takes this count over that slot's. */
struct pf_agg_hot {
	struct pf_agg_key key;  /* key.hook 0: empty */
	__u64 count;
	__u32 misses;           /* events of other keys in a row since its last */
	__u32 _pad;
};

#define PF_AGG_HOT_SLOTS 16  /* one per hook, indexed by enum pf_hook */

/* One slot of the skb tracking table (bpf/track.h): the skb's address (0: free)
 * and its packet's fingerprint. Read by the tests through the kernel's map. */
struct pf_track_slot {
	__u64 skb;
	__u32 fp;
	__u32 _pad;
};

#endif
