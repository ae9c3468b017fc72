/* Filling bpf_fib_lookup: for forwarding an IPv4 packet, and for the outer
 * header of a tunnel. */
#pragma once

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_endian.h>
#include "csum.h"
#include "eth.h"
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

/* The outer next hop of tunnel t (use with BPF_FIB_LOOKUP_OUTPUT). The
 * WAN device as output interface keeps the lookup to routes through it, so
 * the outer packet never follows a route into a tunnel (a default route
 * through the tunnel, say). tot_len 0 leaves the MTU check to the helper. */
static __always_inline void fib_outer(struct bpf_fib_lookup *fib, const struct tunnel *t,
				      __u16 tot_len)
{
	fib->family = AF_INET;
	fib->l4_protocol = IPPROTO_GRE;
	fib->tot_len = tot_len;
	fib->ipv4_src = t->local;
	fib->ipv4_dst = t->remote;
	fib->ifindex = t->wan_ifindex;
}

/* The kernel's rp_filter, per tunnel, for a packet decapsulated from the
 * tunnel of ep: strict wants the route back to the inner source to leave
 * through that tunnel, loose wants any unicast route back. The lookup is
 * the one forwarding would make for a packet to the source arriving on
 * the tunnel; where the tunnel does not forward there is no such lookup,
 * and the packet can only be for this host: it passes. */
static __always_inline int inner_source_ok(void *ctx, const struct iphdr *inner,
					   const struct endpoint *ep)
{
	struct bpf_fib_lookup fib = {};
	long rc;

	if (ep->rp_filter == RP_OFF)
		return 1;
	fib.family = AF_INET;
	fib.tos = inner->tos;
	fib.l4_protocol = inner->protocol;
	fib.ipv4_src = inner->daddr;
	fib.ipv4_dst = inner->saddr;
	fib.ifindex = ep->ifindex;
	/* Any size fits: a tot_len of 0 would have the TC helper check this
	 * packet's size against the route back (FRAG_NEEDED, not an answer). */
	fib.tot_len = 1;
	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_FWD_DISABLED)
		return 1;
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return 0;
	return ep->rp_filter == RP_LOOSE || fib.ifindex == ep->ifindex;
}

/* Sends an IPv4 frame where a successful lookup said: TTL - 1, the next
 * hop's MACs, redirect. */
static __always_inline long xdp_forward(struct ethhdr *eth, struct iphdr *ip,
					const struct bpf_fib_lookup *fib)
{
	ipv4_dec_ttl(ip);
	eth_write_macs(eth, fib->dmac, fib->smac);
	return bpf_redirect(fib->ifindex, 0);
}
