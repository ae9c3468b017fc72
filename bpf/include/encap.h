/* Outer header construction, identical for every program that encapsulates,
 * and byte for byte what ip_gre sends: DF always set, or with nopmtudisc
 * copied from the inner packet. */
#pragma once

#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_endian.h>
#include "csum.h"
#include "grebpf.h"
#include "ipv6.h"
#include "maps.h"

#define IP_DF 0x4000
#define INET_ECN_MASK 3
#define INET_ECN_ECT_0 2
#define INET_ECN_CE 3

static __always_inline __u32 encap_len(const struct tunnel *t)
{
	return sizeof(struct iphdr) + GRE_HLEN + ((t->flags & TUNNEL_F_OCSUM) ? 4 : 0) +
	       ((t->flags & TUNNEL_F_KEY) ? 4 : 0) + ((t->flags & TUNNEL_F_OSEQ) ? 4 : 0);
}

/* The sequence number of t's next packet, as ip_gre numbers them: 0 up,
 * one atomic increment per packet whichever CPU sends it. */
static __always_inline __be32 next_seqno(const struct tunnel *t)
{
	__u32 dev = t->ifindex;
	struct seqno *s = bpf_map_lookup_elem(&seqnos, &dev);

	if (!s)
		return 0;
	return bpf_htonl(__sync_fetch_and_add(&s->o_seqno, 1));
}

/* What encapsulation takes from an inner IPv4 or IPv6 header. */
struct inner_hdr {
	__be16 proto; /* the GRE protocol type: ETH_P_IP or ETH_P_IPV6 */
	__u16 len;    /* the packet's length, from its header */
	__u8 tos;     /* DSCP and ECN, or the traffic class */
	__u8 ttl;     /* TTL, or hop limit */
	__be16 df;    /* IPv4's DF bit; IPv6 has none, and ip_gre copies none */
};

/* Reads the inner header at l3 of protocol proto (network order); 0, or
 * -1 when it is neither IPv4 nor IPv6 or not all there. */
static __always_inline int inner_read(void *l3, void *data_end, __be16 proto, struct inner_hdr *h)
{
	h->proto = proto;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;

		if ((void *)(ip + 1) > data_end)
			return -1;
		h->len = bpf_ntohs(ip->tot_len);
		h->tos = ip->tos;
		h->ttl = ip->ttl;
		h->df = ip->frag_off & bpf_htons(IP_DF);
		return 0;
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;

		if ((void *)(ip6 + 1) > data_end)
			return -1;
		h->len = ipv6_len(ip6);
		h->tos = ipv6_dsfield(ip6);
		h->ttl = ip6->hop_limit;
		h->df = 0;
		return 0;
	}
	return -1;
}

/* ip_gre's INET_ECN_encapsulate: ECN always follows the inner header,
 * except that CE becomes ECT(0) so the outer hop can mark it again. */
static __always_inline __u8 outer_tos(const struct tunnel *t, __u8 inner)
{
	__u8 dscp = (t->flags & TUNNEL_F_TOS_INHERIT) ? inner : t->tos;
	__u8 ecn = inner & INET_ECN_MASK;

	if (ecn == INET_ECN_CE)
		ecn = INET_ECN_ECT_0;
	return (dscp & ~INET_ECN_MASK) | ecn;
}

/* Writes outer IPv4 and GRE at ip for the inner packet in (read before
 * the headers were pushed); the caller has bounds-checked encap_len(t)
 * bytes there (at most GRE_MAX_HLEN of GRE). tot_len covers outer and
 * inner; seq is the sequence number when the tunnel sends them. */
static __always_inline void encap_write(struct iphdr *ip, const struct tunnel *t,
					const struct inner_hdr *in, __u16 tot_len, __be32 seq)
{
	__be16 *gre = (void *)(ip + 1);
	__be32 *opt = (void *)(gre + 2);
	__u16 flags = 0;

	ip->version = 4;
	ip->ihl = 5;
	ip->tos = outer_tos(t, in->tos);
	ip->tot_len = bpf_htons(tot_len);
	ip->id = (__be16)bpf_get_prandom_u32();
	ip->frag_off = (t->flags & TUNNEL_F_NOPMTUDISC) ? in->df : bpf_htons(IP_DF);
	ip->ttl = t->ttl ? t->ttl : in->ttl;
	ip->protocol = IPPROTO_GRE;
	ip->check = 0;
	ip->saddr = t->local;
	ip->daddr = t->remote;
	ip->check = ipv4_csum(ip);

	gre[1] = in->proto;
	if (t->flags & TUNNEL_F_OCSUM) {
		flags |= GRE_CSUM;
		*opt++ = 0; /* the caller sums the whole packet into it */
	}
	if (t->flags & TUNNEL_F_KEY) {
		flags |= GRE_KEY;
		*opt++ = t->key;
	}
	if (t->flags & TUNNEL_F_OSEQ) {
		flags |= GRE_SEQ;
		*opt = seq;
	}
	gre[0] = bpf_htons(flags);
}

