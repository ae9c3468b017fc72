/* Inner IPv6 headers: what encap reads of them (traffic class, hop limit,
 * length) and what decap and forwarding rewrite (ECN, hop limit), as the
 * kernel's ipv6_get_dsfield, IP6_ECN_set_ce and ip6_forward do. IPv6 has
 * no header checksum, so every rewrite is a plain store. */
#pragma once

#include <linux/in6.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>

#define IPV6_MIN_MTU 1280
#define IPV6_FLOWINFO_MASK 0x0fffffff

/* The traffic class: the low nibble of the first byte, the high nibble of
 * the second. */
static __always_inline __u8 ipv6_dsfield(const struct ipv6hdr *ip6)
{
	return (bpf_ntohs(*(const __be16 *)ip6) >> 4) & 0xff;
}

/* The ECN field is bits 4 and 5 of the second byte. */
static __always_inline __u8 ipv6_ecn(const struct ipv6hdr *ip6)
{
	return (((const __u8 *)ip6)[1] >> 4) & 3;
}

static __always_inline void ipv6_set_ecn(struct ipv6hdr *ip6, __u8 ecn)
{
	__u8 *b = (__u8 *)ip6;

	b[1] = (b[1] & ~0x30) | (ecn << 4);
}

static __always_inline __u16 ipv6_len(const struct ipv6hdr *ip6)
{
	return sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
}

/* Unspecified (::), loopback (::1), multicast: never a packet's sender the
 * kernel would answer with an ICMPv6 error. */
static __always_inline int ipv6_unicast_source(const struct in6_addr *a)
{
	if (a->in6_u.u6_addr8[0] == 0xff)
		return 0;
	if (a->in6_u.u6_addr32[0] | a->in6_u.u6_addr32[1] | a->in6_u.u6_addr32[2])
		return 1;
	return a->in6_u.u6_addr32[3] != 0 && a->in6_u.u6_addr32[3] != bpf_htonl(1);
}

static __always_inline int ipv6_link_local(const struct in6_addr *a)
{
	return (a->in6_u.u6_addr16[0] & bpf_htons(0xffc0)) == bpf_htons(0xfe80);
}

/* A source that is the link's own: link-local, or unspecified (an MLD
 * report sent before the link-local address exists, RFC 3590). */
static __always_inline int ipv6_on_link_source(const struct in6_addr *a)
{
	return ipv6_link_local(a) ||
	       !(a->in6_u.u6_addr32[0] | a->in6_u.u6_addr32[1] | a->in6_u.u6_addr32[2] | a->in6_u.u6_addr32[3]);
}

/* Whether ip6_forward would forward ip6 at all: never a link-local source
 * or destination (it answers "beyond scope"), never multicast. What it
 * would not forward is left to it. */
static __always_inline int ipv6_forwardable(const struct ipv6hdr *ip6)
{
	return !ipv6_on_link_source(&ip6->saddr) && !ipv6_link_local(&ip6->daddr) &&
	       ip6->daddr.in6_u.u6_addr8[0] != 0xff && ip6->saddr.in6_u.u6_addr8[0] != 0xff;
}
