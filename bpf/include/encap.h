/* Outer header construction, identical for every program that encapsulates,
 * and byte for byte what ip_gre and ip6gre send: IPv4 with DF always set,
 * or with nopmtudisc copied from the inner packet; IPv6 with ip6gre's
 * encapsulation limit option unless the tunnel has none. */
#pragma once

#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_endian.h>
#include "csum.h"
#include "grebpf.h"
#include "ipv6.h"
#include "maps.h"
#include "outer.h"

#define IP_DF 0x4000
#define INET_ECN_MASK 3
#define INET_ECN_ECT_0 2
#define INET_ECN_CE 3

/* ip6gre's tunnel encapsulation limit, as its init_tel_txopt lays it
 * out: a destination options header holding the option (type 4, length
 * 1, the limit) and a one-byte PadN to fill it to 8 bytes. */
struct encap_limit_opt {
	__u8 nexthdr;
	__u8 hdrlen; /* in 8-byte units beyond the first: 0 */
	__u8 type;
	__u8 len;
	__u8 limit;
	__u8 pad_type;
	__u8 pad_len;
	__u8 pad;
};

#define IPV6_TLV_PADN 1
#define IPV6_TLV_TNL_ENCAP_LIMIT 4

/* The longest outer header of each family, GRE options included. Every
 * encapsulated packet is at least this long: its inner header is there. */
#define OUTER_V4_MAX_HLEN (sizeof(struct iphdr) + GRE_MAX_HLEN)
#define OUTER_V6_MAX_HLEN (sizeof(struct ipv6hdr) + sizeof(struct encap_limit_opt) + GRE_MAX_HLEN)

/* The outer IP header's length, IPv6's extension header included. */
static __always_inline __u32 outer_ip_len(const struct tunnel *t)
{
	if (!(t->flags & TUNNEL_F_OUTER_V6))
		return sizeof(struct iphdr);
	return sizeof(struct ipv6hdr) + ((t->flags & TUNNEL_F_ENCAP_LIMIT) ? sizeof(struct encap_limit_opt) : 0);
}

static __always_inline __u32 encap_len(const struct tunnel *t)
{
	return outer_ip_len(t) + GRE_HLEN + ((t->flags & TUNNEL_F_OCSUM) ? 4 : 0) +
	       ((t->flags & TUNNEL_F_KEY) ? 4 : 0) + ((t->flags & TUNNEL_F_OSEQ) ? 4 : 0);
}

/* The outer Ethernet type. */
static __always_inline __be16 outer_proto(const struct tunnel *t)
{
	return (t->flags & TUNNEL_F_OUTER_V6) ? bpf_htons(ETH_P_IPV6) : bpf_htons(ETH_P_IP);
}

/* An outer flow label from a flow hash, as ip6_make_flowlabel makes one
 * (rotated by 16 bits, the low 20 kept): packets of one inner flow keep
 * one label, so the path spreads flows, not packets. */
static __always_inline __u32 flowlabel_of(__u32 hash)
{
	return ((hash << 16) | (hash >> 16)) & 0xfffff;
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

/* A flow hash of the inner header at l3 where no skb hash exists (XDP):
 * addresses and protocol, mixed, so that one flow keeps one label. */
static __always_inline __u32 inner_hash(void *l3, void *data_end, __be16 proto)
{
	__u32 h;

	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;
		const __u32 *s, *d;

		if ((void *)(ip6 + 1) > data_end)
			return 0;
		s = ip6->saddr.in6_u.u6_addr32;
		d = ip6->daddr.in6_u.u6_addr32;
		h = s[0] ^ s[1] ^ s[2] ^ s[3] ^ ((d[0] ^ d[1] ^ d[2] ^ d[3]) * 0x85ebca6b) ^ ip6->nexthdr;
	} else {
		struct iphdr *ip = l3;

		if ((void *)(ip + 1) > data_end)
			return 0;
		h = ip->saddr ^ (ip->daddr * 0x85ebca6b) ^ ip->protocol;
	}
	h *= 0x9e3779b1;
	return h ^ (h >> 15);
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

static __always_inline void gre_write(__be16 *gre, const struct tunnel *t, __be16 proto, __be32 seq)
{
	__be32 *opt = (void *)(gre + 2);
	__u16 flags = 0;

	gre[1] = proto;
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

/* Writes the outer header (IPv4, or IPv6 with ip6gre's encapsulation
 * limit when the tunnel sends one) and GRE at l3 for the inner packet in
 * (read before the headers were pushed). tot_len covers outer and inner;
 * seq is the sequence number when the tunnel sends them; flowlabel is an
 * outer IPv6 header's. -1 when the packet is shorter than any
 * encapsulated packet is, which the caller's checks rule out. */
static __always_inline int encap_write(void *l3, void *data_end, const struct tunnel *t,
				       const struct inner_hdr *in, __u16 tot_len, __be32 seq, __u32 flowlabel)
{
	if (t->flags & TUNNEL_F_OUTER_V6) {
		struct ipv6hdr *ip6 = l3;
		struct encap_limit_opt *o = (void *)(ip6 + 1);

		if (l3 + OUTER_V6_MAX_HLEN > data_end)
			return -1;
		/* ip6gre copies the inner DSCP and ECN as they are (CE too),
		 * or sends the fixed traffic class whole: it has no
		 * INET_ECN_encapsulate. */
		__u8 tclass = (t->flags & TUNNEL_F_TOS_INHERIT) ? in->tos : t->tos;

		*(__be32 *)ip6 = bpf_htonl(6 << 28 | (__u32)tclass << 20 | flowlabel);
		ip6->payload_len = bpf_htons(tot_len - sizeof(*ip6));
		ip6->hop_limit = t->ttl ? t->ttl : in->ttl;
		outer_addr_get6(&ip6->saddr, &t->local);
		outer_addr_get6(&ip6->daddr, &t->remote);
		if (!(t->flags & TUNNEL_F_ENCAP_LIMIT)) {
			ip6->nexthdr = IPPROTO_GRE;
			gre_write((void *)o, t, in->proto, seq);
			return 0;
		}
		ip6->nexthdr = IPPROTO_DSTOPTS;
		o->nexthdr = IPPROTO_GRE;
		o->hdrlen = 0;
		o->type = IPV6_TLV_TNL_ENCAP_LIMIT;
		o->len = 1;
		o->limit = t->encap_limit;
		o->pad_type = IPV6_TLV_PADN;
		o->pad_len = 1;
		o->pad = 0;
		gre_write((void *)(o + 1), t, in->proto, seq);
		return 0;
	}

	struct iphdr *ip = l3;

	if (l3 + OUTER_V4_MAX_HLEN > data_end)
		return -1;
	ip->version = 4;
	ip->ihl = 5;
	ip->tos = outer_tos(t, in->tos);
	ip->tot_len = bpf_htons(tot_len);
	ip->id = (__be16)bpf_get_prandom_u32();
	ip->frag_off = (t->flags & TUNNEL_F_NOPMTUDISC) ? in->df : bpf_htons(IP_DF);
	ip->ttl = t->ttl ? t->ttl : in->ttl;
	ip->protocol = IPPROTO_GRE;
	ip->check = 0;
	ip->saddr = outer_addr4(&t->local);
	ip->daddr = outer_addr4(&t->remote);
	ip->check = ipv4_csum(ip);
	gre_write((void *)(ip + 1), t, in->proto, seq);
	return 0;
}
