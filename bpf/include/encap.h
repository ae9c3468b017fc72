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

/* Writes outer IPv4 and GRE at ip; the caller has bounds-checked
 * encap_len(t) bytes there (at most GRE_MAX_HLEN of GRE). tot_len covers
 * outer and inner; inner_df is the inner header's frag_off & DF; seq the
 * sequence number when the tunnel sends them. */
static __always_inline void encap_write(struct iphdr *ip, const struct tunnel *t,
					__u8 inner_tos, __u8 inner_ttl, __be16 inner_df, __u16 tot_len,
					__be32 seq)
{
	__be16 *gre = (void *)(ip + 1);
	__be32 *opt = (void *)(gre + 2);
	__u16 flags = 0;

	ip->version = 4;
	ip->ihl = 5;
	ip->tos = outer_tos(t, inner_tos);
	ip->tot_len = bpf_htons(tot_len);
	ip->id = (__be16)bpf_get_prandom_u32();
	ip->frag_off = (t->flags & TUNNEL_F_NOPMTUDISC) ? inner_df : bpf_htons(IP_DF);
	ip->ttl = t->ttl ? t->ttl : inner_ttl;
	ip->protocol = IPPROTO_GRE;
	ip->check = 0;
	ip->saddr = t->local;
	ip->daddr = t->remote;
	ip->check = ipv4_csum(ip);

	gre[1] = bpf_htons(ETH_P_IP);
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

