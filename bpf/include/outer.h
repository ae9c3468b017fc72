/* Outer addresses: struct outer_addr holds IPv6 as is and IPv4 mapped
 * (::ffff:a.b.c.d), so that one key type serves both outer families. */
#pragma once

#include <linux/in6.h>
#include <bpf/bpf_endian.h>
#include "grebpf.h"

static __always_inline __be32 outer_addr4(const struct outer_addr *a)
{
	return ((const __be32 *)a->a)[3];
}

static __always_inline void outer_addr_set4(struct outer_addr *a, __be32 v4)
{
	__be32 *w = (__be32 *)a->a;

	w[0] = 0;
	w[1] = 0;
	w[2] = bpf_htonl(0xffff);
	w[3] = v4;
}

static __always_inline void outer_addr_set6(struct outer_addr *a, const struct in6_addr *v6)
{
	__be32 *w = (__be32 *)a->a;

	w[0] = v6->in6_u.u6_addr32[0];
	w[1] = v6->in6_u.u6_addr32[1];
	w[2] = v6->in6_u.u6_addr32[2];
	w[3] = v6->in6_u.u6_addr32[3];
}

static __always_inline void outer_addr_get6(struct in6_addr *v6, const struct outer_addr *a)
{
	const __be32 *w = (const __be32 *)a->a;

	v6->in6_u.u6_addr32[0] = w[0];
	v6->in6_u.u6_addr32[1] = w[1];
	v6->in6_u.u6_addr32[2] = w[2];
	v6->in6_u.u6_addr32[3] = w[3];
}

static __always_inline int outer_addr_eq(const struct outer_addr *x, const struct outer_addr *y)
{
	const __u32 *a = (const __u32 *)x->a, *b = (const __u32 *)y->a;

	return !((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]));
}
