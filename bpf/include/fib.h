/* Filling bpf_fib_lookup: for forwarding an IPv4 packet, and for the outer
 * header of a tunnel. */
#pragma once

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_endian.h>
#include "csum.h"
#include "grebpf.h"

#define AF_INET 2

/* Where the stack would forward ip, which came in on ifindex. */
static __always_inline void fib_forward(struct bpf_fib_lookup *fib, const struct iphdr *ip, __u32 ifindex)
{
	fib->family = AF_INET;
	fib->tos = ip->tos;
	fib->l4_protocol = ip->protocol;
	fib->tot_len = bpf_ntohs(ip->tot_len);
	fib->ipv4_src = ip->saddr;
	fib->ipv4_dst = ip->daddr;
	fib->ifindex = ifindex;
}

/* The outer next hop of tunnel t, leaving through ifindex (use with
 * BPF_FIB_LOOKUP_OUTPUT). tot_len 0 leaves the MTU check to the helper. */
static __always_inline void fib_outer(struct bpf_fib_lookup *fib, const struct tunnel *t,
				      __u32 ifindex, __u16 tot_len)
{
	fib->family = AF_INET;
	fib->l4_protocol = IPPROTO_GRE;
	fib->tot_len = tot_len;
	fib->ipv4_src = t->local;
	fib->ipv4_dst = t->remote;
	fib->ifindex = ifindex;
}

/* Sends an IPv4 frame where a successful lookup said: TTL - 1, the next
 * hop's MACs, redirect. */
static __always_inline long xdp_forward(struct ethhdr *eth, struct iphdr *ip,
					const struct bpf_fib_lookup *fib)
{
	ipv4_dec_ttl(ip);
	__builtin_memcpy(eth->h_dest, fib->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib->smac, ETH_ALEN);
	return bpf_redirect(fib->ifindex, 0);
}
