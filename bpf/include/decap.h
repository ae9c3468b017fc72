/* Decapsulation checks shared by the XDP and TC ingress programs: one
 * function decides, each program only strips headers its own way. */
#pragma once

#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_endian.h>
#include "csum.h"
#include "fib.h"
#include "ipv6.h"
#include "maps.h"
#include "outer.h"
#include "pmtu.h"

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

struct decap {
	const struct endpoint *ep; /* the tunnel the packet belongs to */
	__u32 strip;               /* outer IP + GRE bytes after the Ethernet header */
	__u32 inner_len;           /* inner packet length, from its header */
	__u8 inner_v6;             /* the inner packet is IPv6 (GRE type 0x86dd), not IPv4 */
	__u8 outer_v6;             /* the outer header is IPv6 */
	__u8 outer_ecn;            /* the outer header's ECN field */
	/* The GRE checksum is to be checked, over gre_len bytes from gre_off
	 * in the frame (the caller reads them its own way). */
	__u8 gre_csum;
	__u32 gre_off, gre_len;
	/* An ICMP "fragmentation needed" or ICMPv6 "packet too big" to us
	 * (REASON_NOT_GRE with icmp.len set). */
	struct icmp_found icmp;
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

/* The outer IPv4 header of a frame: what it makes of the packet, and
 * for GRE its length (*ohl), the outer packet's (*tot) and the path (pk).
 * Whether the path is a peer's is looked up here only when the header
 * (a fragment, options) calls for a verdict that a stranger's packet must
 * not get; *peer_checked then says so. Otherwise decap_classify decides
 * it: a tunnel's endpoint found is a peer's, and only a packet it finds
 * none for costs the lookup. */
static __always_inline enum reason outer_v4(struct iphdr *ip, void *data_end, __u64 pkt_len,
					    struct decap *d, struct peer_key *pk, __u32 *ohl, __u32 *tot,
					    int *peer_checked)
{
	enum reason r;

	if ((void *)(ip + 1) > data_end)
		return REASON_TRUNCATED;
	if (ip->protocol != IPPROTO_GRE) {
		/* Left to the stack whatever it is; noted first if it is
		 * about the path of one of our tunnels. */
		if (ip->protocol == IPPROTO_ICMP &&
		    outer_header(ip, data_end, pkt_len, tot) == REASON_NONE &&
		    !(ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)) &&
		    is_frag_needed(ip, data_end, *tot, &d->icmp)) {
			d->icmp.v6 = 0;
			outer_addr_set4(&d->icmp.from, ip->saddr);
			outer_addr_set4(&d->icmp.to, ip->daddr);
		}
		return REASON_NOT_GRE;
	}
	r = outer_header(ip, data_end, pkt_len, tot);
	if (r != REASON_NONE)
		return r;
	*ohl = ip->ihl * 4;

	outer_addr_set4(&pk->local, ip->daddr);
	outer_addr_set4(&pk->remote, ip->saddr);
	d->outer_ecn = ip->tos & 3;
	if (!(ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)) && *ohl == sizeof(*ip))
		return REASON_NONE; /* the peer is checked later, if need be */
	*peer_checked = 1;
	if (!bpf_map_lookup_elem(&peers, pk))
		return REASON_UNKNOWN_PEER;
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return REASON_OUTER_FRAGMENT;
	return outer_options(ip, data_end);
}

/* Destination options decap reads past: what a peer sends (ip6gre's
 * encapsulation limit takes 8 bytes) and one more 8-byte unit. The walk
 * is copied byte by byte, and its length is what the verifier pays on
 * every load: 64 bytes made attach four times slower (1.6 s, not 0.4). */
#define DSTOPT_SPACE 16

struct dstopt_walk {
	__u8 buf[DSTOPT_SPACE];
	__u32 len, i;
	enum reason verdict;
};

/* ip6_parse_tlv's verdict on one option: Pad1 and PadN, and any option
 * whose type says "skip if unknown" (the top two bits 00, as the tunnel
 * encapsulation limit's), are passed over; an option the kernel does not
 * know and would discard the packet for, or one that overruns the
 * header, drops it. */
static long dstopt_step(__u64 index, void *ctx)
{
	struct dstopt_walk *w = ctx;
	__u32 i = w->i;
	__u8 type;

	if (i >= w->len || i >= DSTOPT_SPACE)
		return 1;
	type = w->buf[i];
	if (type == 0) { /* Pad1 */
		w->i = i + 1;
		return 0;
	}
	if (i + 1 >= w->len || i + 1 >= DSTOPT_SPACE || i + 2 + w->buf[i + 1] > w->len ||
	    (type != IPV6_TLV_PADN && (type & 0xc0))) {
		w->verdict = REASON_OUTER_OPTIONS;
		return 1;
	}
	w->i = i + 2 + w->buf[i + 1];
	return 0;
}

/* The options of a destination options header of len bytes at opt. */
static __always_inline enum reason dstopts_check(__u8 *opt, __u32 len, void *data_end)
{
	struct dstopt_walk w = {.len = len, .i = 2};

	for (int k = 0; k < DSTOPT_SPACE; k++) {
		if (k >= len)
			break;
		if ((void *)(opt + k + 1) > data_end)
			return REASON_TRUNCATED;
		w.buf[k] = opt[k];
	}
	bpf_loop(DSTOPT_SPACE, dstopt_step, &w, 0);
	return w.verdict;
}

/* outer_v4 for an outer IPv6 header: GRE straight after it, or after
 * destination options (ip6gre's encapsulation limit). */
static __always_inline enum reason outer_v6(struct ipv6hdr *ip6, void *data_end, __u64 pkt_len,
					    struct decap *d, struct peer_key *pk, __u32 *ohl, __u32 *tot,
					    int *peer_checked)
{
	struct ipv6_opt_hdr *o = (void *)(ip6 + 1);
	__u32 olen = 0;
	enum reason r;
	__u8 nh;

	if ((void *)(ip6 + 1) > data_end)
		return REASON_TRUNCATED;
	nh = ip6->nexthdr;
	*tot = ipv6_len(ip6);
	if (ip6->version != 6 || *tot > pkt_len - ETH_HLEN)
		return nh == IPPROTO_GRE || nh == IPPROTO_DSTOPTS ? REASON_TRUNCATED : REASON_NOT_GRE;
	if (nh == IPPROTO_ICMPV6) {
		if (is_pkt_too_big(ip6, data_end, *tot, &d->icmp)) {
			d->icmp.v6 = 1;
			outer_addr_set6(&d->icmp.from, &ip6->saddr);
			outer_addr_set6(&d->icmp.to, &ip6->daddr);
		}
		return REASON_NOT_GRE;
	}
	if (nh == IPPROTO_DSTOPTS) {
		if ((void *)(o + 1) > data_end)
			return REASON_TRUNCATED;
		nh = o->nexthdr;
		olen = (o->hdrlen + 1) * 8;
		if (nh != IPPROTO_GRE)
			return REASON_NOT_GRE;
	}
	if (nh != IPPROTO_GRE && nh != IPPROTO_FRAGMENT)
		return REASON_NOT_GRE;

	outer_addr_set6(&pk->local, &ip6->daddr);
	outer_addr_set6(&pk->remote, &ip6->saddr);
	if (nh == IPPROTO_FRAGMENT || olen) {
		*peer_checked = 1;
		if (!bpf_map_lookup_elem(&peers, pk))
			return REASON_UNKNOWN_PEER;
	}
	if (nh == IPPROTO_FRAGMENT)
		return REASON_OUTER_FRAGMENT;
	if (olen) {
		if (olen > DSTOPT_SPACE)
			return REASON_OUTER_OPTIONS;
		if (*tot < sizeof(*ip6) + olen)
			return REASON_TRUNCATED;
		r = dstopts_check((void *)o, olen, data_end);
		if (r != REASON_NONE)
			return r;
	}
	*ohl = sizeof(*ip6) + olen;
	if (*tot < *ohl + GRE_HLEN)
		return REASON_TRUNCATED;
	d->outer_ecn = ipv6_ecn(ip6);
	return REASON_NONE;
}

/* The GRE header after an outer header of ohl bytes from the path pk, in
 * an outer packet of tot bytes, and the inner header after it. */
static __always_inline enum reason gre_classify(struct ethhdr *eth, void *data_end,
						const struct peer_key *pk, __u32 ohl, __u32 tot,
						struct decap *d)
{
	struct endpoint_key ek = {};
	struct endpoint *ep;
	struct iphdr *inner;
	__u32 glen = GRE_HLEN;
	__be16 *gre;
	__u16 flags;

	gre = (void *)(eth + 1) + masked(ohl, 127);
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
		if (tot < ohl + glen + 4 || (void *)(key + 1) > data_end)
			return REASON_TRUNCATED;
		ek.key = *key;
		ek.keyed = 1;
		glen += 4;
	}
	ek.local = pk->local;
	ek.remote = pk->remote;
	ep = bpf_map_lookup_elem(&endpoints, &ek);
	d->ep = ep;
	if (!ep)
		return REASON_KEY_MISMATCH; /* unless a stranger's: decap_classify asks */
	if (!(flags & GRE_CSUM) != !ep->icsum)
		return REASON_CSUM_FLAG;
	/* A sequence number follows the key: ignored, as ip_gre ignores it,
	 * unless the tunnel has iseq. */
	if (flags & GRE_SEQ) {
		__be32 *seq = (void *)gre + glen;

		if (tot < ohl + glen + 4 || (void *)(seq + 1) > data_end)
			return REASON_TRUNCATED;
		if (ep->iseq && !seq_in_order(ep->ifindex, bpf_ntohl(*seq)))
			return REASON_SEQ_ORDER;
		glen += 4;
	} else if (ep->iseq) {
		return REASON_SEQ_ORDER;
	}
	inner = (void *)gre + glen;
	if (gre[1] == bpf_htons(ETH_P_IP)) {
		if (tot < ohl + glen + sizeof(*inner) || (void *)(inner + 1) > data_end)
			return REASON_TRUNCATED;
		if (inner->version != 4)
			return REASON_UNKNOWN_INNER;
		d->inner_len = bpf_ntohs(inner->tot_len);
		if (inner->ihl < 5 || d->inner_len < sizeof(*inner))
			return REASON_TRUNCATED;
		d->inner_v6 = 0;
	} else if (gre[1] == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *inner6 = (void *)gre + glen;

		if (tot < ohl + glen + sizeof(*inner6) || (void *)(inner6 + 1) > data_end)
			return REASON_TRUNCATED;
		if (inner6->version != 6)
			return REASON_UNKNOWN_INNER;
		d->inner_len = ipv6_len(inner6);
		d->inner_v6 = 1;
	} else {
		return REASON_UNKNOWN_INNER;
	}
	if (d->inner_len > tot - ohl - glen)
		return REASON_TRUNCATED;

	d->gre_csum = !!(flags & GRE_CSUM);
	d->gre_off = ETH_HLEN + ohl;
	d->gre_len = tot - ohl;
	d->strip = ohl + glen;
	return REASON_NONE;
}

/* pkt_len is the frame length, which for a TC skb may exceed data_end. */
static __always_inline enum reason decap_classify(void *data, void *data_end,
						  __u64 pkt_len, struct decap *d)
{
	struct ethhdr *eth = data;
	struct peer_key pk;
	__u32 ohl = 0, tot = 0;
	int peer_checked = 0;
	enum reason r;

	d->icmp.len = 0;
	d->ep = NULL;
	if ((void *)(eth + 1) > data_end)
		return REASON_NOT_GRE;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		d->outer_v6 = 0;
		r = outer_v4((void *)(eth + 1), data_end, pkt_len, d, &pk, &ohl, &tot, &peer_checked);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		d->outer_v6 = 1;
		r = outer_v6((void *)(eth + 1), data_end, pkt_len, d, &pk, &ohl, &tot, &peer_checked);
	} else {
		return REASON_NOT_GRE;
	}
	if (r != REASON_NONE)
		return r;
	r = gre_classify(eth, data_end, &pk, ohl, tot, d);
	/* Every endpoint is a peer's. A packet no endpoint took is a
	 * stranger's, whatever else is wrong with it, unless it is a peer's. */
	if (r != REASON_NONE && !d->ep && !peer_checked && !bpf_map_lookup_elem(&peers, &pk))
		return REASON_UNKNOWN_PEER;
	return r;
}

#define ECN_NOT_ECT 0
#define ECN_ECT_1 1
#define ECN_ECT_0 2
#define ECN_CE 3

/* RFC 6040 decapsulation, as ip_gre's INET_ECN_decapsulate: outer CE
 * marks an ECN-capable inner packet CE and drops one that is not (it
 * cannot carry the congestion signal); outer ECT(1) turns inner ECT(0)
 * into ECT(1); anything else leaves the inner header alone. Returns the
 * inner packet's new ECN field, or -1: dropped. */
static __always_inline int ecn_decap(__u8 o, __u8 i)
{
	if (i == ECN_NOT_ECT)
		return o == ECN_CE ? -1 : i;
	if (o == ECN_CE)
		return ECN_CE;
	if (o == ECN_ECT_1 && i == ECN_ECT_0)
		return ECN_ECT_1;
	return i;
}

/* What decap checks and rewrites in a decapsulated inner packet at l3 (d
 * from decap_classify, which has checked its header is there): its source
 * (rp_filter) and its ECN field. */
static __always_inline enum reason inner_accept(void *ctx, void *l3, void *data_end,
						const struct decap *d)
{
	int ecn;

	if (d->inner_v6) {
		struct ipv6hdr *ip6 = l3;

		if ((void *)(ip6 + 1) > data_end)
			return REASON_TRUNCATED;
		if (!inner_source_ok6(ctx, ip6, d->ep))
			return REASON_INNER_SOURCE;
		ecn = ecn_decap(d->outer_ecn, ipv6_ecn(ip6));
		if (ecn < 0)
			return REASON_ECN_NOT_ECT;
		ipv6_set_ecn(ip6, ecn);
	} else {
		struct iphdr *ip = l3;

		if ((void *)(ip + 1) > data_end)
			return REASON_TRUNCATED;
		if (!inner_source_ok(ctx, ip, d->ep))
			return REASON_INNER_SOURCE;
		ecn = ecn_decap(d->outer_ecn, ip->tos & 3);
		if (ecn < 0)
			return REASON_ECN_NOT_ECT;
		/* The kernel's IP_ECN_set_ce and IP_ECN_set_ect1, checksum
		 * updated as they do it. */
		if (ecn == ECN_CE)
			ipv4_set_ce(ip);
		else if (ecn == ECN_ECT_1)
			ipv4_set_ect1(ip);
	}
	return REASON_NONE;
}
