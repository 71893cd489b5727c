/* pktfate: the programs bcc compiles as one object. Each hook lives in its own
 * file; tracer/config.py decides through -D defines which ones are built and
 * with which settings, so this file never changes at run time. */

/* bcc builds each tracepoint's argument struct from the kernel's format file,
 * which names these enums. Only their size (that of an int) matters here: their
 * values are read from the running kernel's BTF, never from a header. */
enum skb_drop_reason { PF_SKB_DROP_REASON_PLACEHOLDER };
enum sk_rst_reason { PF_SK_RST_REASON_PLACEHOLDER };

#include "event.h"
#include "parse.h"
#include "filter.h"
#include "skb.h"
#include "track.h"

#if PF_HOOK_XDP_ON
#include "xdp.c"
#endif
#if PF_HOOK_TC_ON
#include "tc.c"
#endif
#if PF_HAVE_KFREE_SKB
#include "kfree_skb.c"
#endif
#include "tcp.c"
#include "icmp.c"
#include "sock.c"
#if PF_TRACK && PF_HAVE_CONSUME_SKB
#include "consume_skb.c"
#endif
