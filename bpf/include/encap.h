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
	return sizeof(struct iphdr) +
	       ((t->flags & TUNNEL_F_KEY) ? GRE_KEY_HLEN : GRE_HLEN);
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
 * encap_len(t) bytes there. tot_len covers outer and inner; inner_df is
 * the inner header's frag_off & DF. */
static __always_inline void encap_write(struct iphdr *ip, const struct tunnel *t,
					__u8 inner_tos, __u8 inner_ttl, __be16 inner_df, __u16 tot_len)
{
	__be16 *gre = (void *)(ip + 1);

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

	gre[0] = bpf_htons((t->flags & TUNNEL_F_KEY) ? GRE_KEY : 0);
	gre[1] = bpf_htons(ETH_P_IP);
	if (t->flags & TUNNEL_F_KEY)
		*(__be32 *)(gre + 2) = t->key;
}
