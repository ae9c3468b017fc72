/* Decapsulation checks shared by the XDP and TC ingress programs: one
 * function decides, each program only strips headers its own way. */
#pragma once

#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_endian.h>
#include "csum.h"
#include "maps.h"
#include "pmtu.h"

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

struct decap {
	const struct endpoint *ep; /* the tunnel the packet belongs to */
	__u32 strip;               /* outer IPv4 + GRE bytes after the Ethernet header */
	__u32 inner_len;           /* inner IPv4 total length */
	__u8 outer_ecn;            /* the outer header's ECN field */
	/* The GRE checksum is to be checked, over gre_len bytes from gre_off
	 * in the frame (the caller reads them its own way). */
	__u8 gre_csum;
	__u32 gre_off, gre_len;
	/* An ICMP "fragmentation needed" to us (REASON_NOT_GRE with
	 * icmp_len set): where its message starts in the frame, its
	 * length, and the outer destination (the address it was sent to). */
	__u32 icmp_off, icmp_len;
	__be32 icmp_to;
};

/* Anything we do not own goes back to the stack untouched; anything that
 * claims to be ours but is wrong is dropped. */
static __always_inline int reason_passes(enum reason r)
{
	return r == REASON_NOT_GRE || r == REASON_UNKNOWN_PEER ||
	       r == REASON_SOURCE_ROUTED || r == REASON_PATH_MTU;
}

/* Option types: linux/ip.h. Options take at most 40 bytes. */
#define IPOPT_SPACE 40

/* Walking the options is a loop with a branch per option kind: unrolled
 * or bounded, the verifier's states multiply past its limit. So the
 * options are copied to the stack and walked by a bpf_loop callback,
 * which the verifier checks once. */
struct opt_walk {
	__u8 buf[IPOPT_SPACE];
	__u32 len, i;
	__u8 srr, hops_left;
	enum reason verdict;
};

/* The checks of the kernel's ip_options_compile and ip_rcv_options that
 * decide whether it keeps a received packet with options: lengths that
 * fit, pointers where the option's data starts, room for what record
 * route and timestamp would add, one source route at most. */
static long opt_step(__u64 index, void *ctx)
{
	struct opt_walk *w = ctx;
	__u32 i = w->i;
	__u8 type, olen, ptr;

	if (i >= w->len || i >= IPOPT_SPACE)
		return 1;
	type = w->buf[i];
	if (type == IPOPT_END)
		return 1;
	if (type == IPOPT_NOOP) {
		w->i = i + 1;
		return 0;
	}
	if (i + 2 > w->len || i + 1 >= IPOPT_SPACE)
		goto bad;
	olen = w->buf[i + 1];
	if (olen < 2 || i + olen > w->len)
		goto bad;
	if (type == IPOPT_RR || type == IPOPT_LSRR || type == IPOPT_SSRR || type == IPOPT_TS) {
		if (olen < 3 || i + 2 >= IPOPT_SPACE)
			goto bad;
		ptr = w->buf[i + 2];
		if (type == IPOPT_TS ? olen < 4 || ptr < 5 : ptr < 4)
			goto bad;
		if (type == IPOPT_LSRR || type == IPOPT_SSRR) {
			if (w->srr)
				goto bad;
			w->srr = 1;
			w->hops_left = ptr <= olen;
		} else if (ptr <= olen && ptr + 3 > olen) {
			goto bad; /* room left, but not for this hop's entry */
		}
	}
	w->i = i + olen;
	return 0;
bad:
	w->verdict = REASON_OUTER_OPTIONS;
	return 1;
}

/* What the outer header's options (ihl > 5) make of the packet: kept
 * (REASON_NONE), dropped as malformed, dropped for a source route the WAN
 * device refuses, or passed to the stack, which forwards a source route
 * with hops left. */
static __always_inline enum reason outer_options(struct iphdr *ip, void *data_end)
{
	__u8 *opt = (void *)(ip + 1);
	struct opt_walk w = {.len = ip->ihl * 4 - sizeof(*ip)};
	struct attachment *a;
	__u32 zero = 0;

	for (int k = 0; k < IPOPT_SPACE; k++) {
		if (k >= w.len)
			break;
		if ((void *)(opt + k + 1) > data_end)
			return REASON_TRUNCATED;
		w.buf[k] = opt[k];
	}
	bpf_loop(IPOPT_SPACE, opt_step, &w, 0);
	if (w.verdict != REASON_NONE || !w.srr)
		return w.verdict;
	a = bpf_map_lookup_elem(&attachments, &zero);
	if (!a || !(a->flags & ATTACH_F_ACCEPT_SOURCE_ROUTE))
		return REASON_SOURCE_ROUTE;
	return w.hops_left ? REASON_SOURCE_ROUTED : REASON_NONE;
}

/* The outer IPv4 header's own checks: a header that fits the packet and
 * sums right. *tot is its total length. */
static __always_inline enum reason outer_header(struct iphdr *ip, void *data_end, __u64 pkt_len,
						__u32 *tot)
{
	__u32 ihl = ip->ihl * 4;

	if (ip->version != 4 || ip->ihl < 5)
		return REASON_TRUNCATED;
	*tot = bpf_ntohs(ip->tot_len);
	if (*tot < ihl + GRE_HLEN || *tot > pkt_len - ETH_HLEN)
		return REASON_TRUNCATED;
	if (!ipv4_csum_ok(ip, data_end))
		return REASON_OUTER_CHECKSUM;
	return REASON_NONE;
}

/* ip_gre's iseq: a number below the next one expected is dropped (serial
 * number arithmetic), and any other becomes the last one seen. */
static __always_inline int seq_in_order(__u32 ifindex, __u32 seq)
{
	struct seqno *s = bpf_map_lookup_elem(&seqnos, &ifindex);

	if (!s)
		return 1;
	if (s->i_seqno && (__s32)(seq - s->i_seqno) < 0)
		return 0;
	s->i_seqno = seq + 1;
	return 1;
}

/* pkt_len is the frame length, which for a TC skb may exceed data_end. */
static __always_inline enum reason decap_classify(void *data, void *data_end,
						  __u64 pkt_len, struct decap *d)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct endpoint_key ek = {};
	struct peer_key pk;
	struct endpoint *ep;
	struct iphdr *inner;
	__u32 ihl, tot, glen = GRE_HLEN;
	enum reason r;
	__be16 *gre;
	__u16 flags;

	d->icmp_len = 0;
	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return REASON_NOT_GRE;
	if ((void *)(ip + 1) > data_end)
		return REASON_TRUNCATED;
	if (ip->protocol != IPPROTO_GRE) {
		/* Left to the stack whatever it is; noted first if it is
		 * about the path of one of our tunnels. */
		if (ip->protocol == IPPROTO_ICMP &&
		    outer_header(ip, data_end, pkt_len, &tot) == REASON_NONE &&
		    !(ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)) &&
		    is_frag_needed(ip, data_end, tot, &d->icmp_off, &d->icmp_len))
			d->icmp_to = ip->daddr;
		return REASON_NOT_GRE;
	}
	r = outer_header(ip, data_end, pkt_len, &tot);
	if (r != REASON_NONE)
		return r;
	ihl = ip->ihl * 4;

	pk.local = ip->daddr;
	pk.remote = ip->saddr;
	if (!bpf_map_lookup_elem(&peers, &pk))
		return REASON_UNKNOWN_PEER;
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return REASON_OUTER_FRAGMENT;
	if (ihl > sizeof(*ip)) {
		r = outer_options(ip, data_end);
		if (r != REASON_NONE)
			return r;
	}

	gre = (void *)ip + ihl;
	if ((void *)(gre + 2) > data_end)
		return REASON_TRUNCATED;
	flags = bpf_ntohs(gre[0]);
	/* The order follows ip_gre: header sanity, then tunnel match, then
	 * payload type, so a counter names the first thing ip_gre would
	 * have objected to. */
	if (flags & GRE_VERSION)
		return REASON_BAD_VERSION;
	if (flags & GRE_ROUTING)
		return REASON_ROUTING;
	if (flags & GRE_CSUM)
		glen += 4; /* checksum and reserved */
	if (flags & GRE_KEY) {
		__be32 *key = (void *)gre + glen;

		/* Within the outer packet, not merely within the frame. */
		if (tot < ihl + glen + 4 || (void *)(key + 1) > data_end)
			return REASON_TRUNCATED;
		ek.key = *key;
		ek.keyed = 1;
		glen += 4;
	}
	ek.local = pk.local;
	ek.remote = pk.remote;
	ep = bpf_map_lookup_elem(&endpoints, &ek);
	if (!ep)
		return REASON_KEY_MISMATCH; /* a peer's, but no tunnel of it takes this key */
	if (!(flags & GRE_CSUM) != !ep->icsum)
		return REASON_CSUM_FLAG;
	/* A sequence number follows the key: ignored, as ip_gre ignores it,
	 * unless the tunnel has iseq. */
	if (flags & GRE_SEQ) {
		__be32 *seq = (void *)gre + glen;

		if (tot < ihl + glen + 4 || (void *)(seq + 1) > data_end)
			return REASON_TRUNCATED;
		if (ep->iseq && !seq_in_order(ep->ifindex, bpf_ntohl(*seq)))
			return REASON_SEQ_ORDER;
		glen += 4;
	} else if (ep->iseq) {
		return REASON_SEQ_ORDER;
	}
	if (gre[1] != bpf_htons(ETH_P_IP))
		return REASON_UNKNOWN_INNER;

	inner = (void *)gre + glen;
	if (tot < ihl + glen + sizeof(*inner) || (void *)(inner + 1) > data_end)
		return REASON_TRUNCATED;
	if (inner->version != 4)
		return REASON_UNKNOWN_INNER;
	d->inner_len = bpf_ntohs(inner->tot_len);
	if (inner->ihl < 5 || d->inner_len < sizeof(*inner) ||
	    d->inner_len > tot - ihl - glen)
		return REASON_TRUNCATED;

	d->ep = ep;
	d->gre_csum = !!(flags & GRE_CSUM);
	d->gre_off = ETH_HLEN + ihl;
	d->gre_len = tot - ihl;
	d->strip = ihl + glen;
	d->outer_ecn = ip->tos & 3;
	return REASON_NONE;
}

#define ECN_NOT_ECT 0
#define ECN_ECT_1 1
#define ECN_ECT_0 2
#define ECN_CE 3

/* RFC 6040 decapsulation, as ip_gre's INET_ECN_decapsulate: outer CE
 * marks an ECN-capable inner packet CE and drops one that is not (it
 * cannot carry the congestion signal); outer ECT(1) turns inner ECT(0)
 * into ECT(1); anything else leaves the inner header alone. Returns
 * whether the packet may be delivered. */
static __always_inline int ecn_decap(__u8 o, struct iphdr *inner)
{
	__u8 i = inner->tos & 3;

	if (i == ECN_NOT_ECT)
		return o != ECN_CE;
	if (o == ECN_CE)
		ipv4_set_ce(inner);
	else if (o == ECN_ECT_1)
		ipv4_set_ect1(inner);
	return 1;
}
