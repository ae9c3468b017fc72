/* Path MTU discovery as ip_gre does it: an ICMP "fragmentation needed"
 * about one of our outer packets lowers the path MTU to that remote
 * (gre_err's ipv4_update_pmtu), and the next inner packet with DF that no
 * longer fits gets "fragmentation needed" with the tunnel MTU sent to its
 * sender (tnl_update_pmtu's icmp_ndo_send). */
#pragma once

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "csum.h"
#include "scratch.h"
#include "fib.h"
#include "maps.h"

/* The namespace's sysctls, set by the loader: net.ipv4.route.min_pmtu,
 * net.ipv4.route.mtu_expires and net.ipv4.ip_default_ttl. */
volatile const __u32 pmtu_floor = 552;
volatile const __u64 pmtu_expires_ns = 600ULL * 1000000000ULL;
volatile const __u8 icmp_ttl = 64;

/* linux/icmp.h, which cannot be included without libc's socket headers. */
#define ICMP_DEST_UNREACH 3
#define ICMP_SOURCE_QUENCH 4
#define ICMP_REDIRECT 5
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12
#define ICMP_FRAG_NEEDED 4

/* The ICMP header of a "fragmentation needed". */
struct icmphdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be16 unused;
	__be16 mtu;
};

/* The shortest message pmtu_note reads: ICMP header, the quoted IPv4
 * header, the GRE header. */
#define ICMP_MSG_MIN (sizeof(struct icmphdr) + sizeof(struct iphdr) + GRE_HLEN)

/* icmp_send quotes at most what fits a 576-byte datagram. */
#define ICMP_QUOTE_MAX (576 - sizeof(struct iphdr) - sizeof(struct icmphdr))

/* The learned path MTU towards a tunnel's remote, if one holds now. */
static __always_inline __u32 path_mtu_of(const struct tunnel *t)
{
	struct peer_key k = {.local = t->local, .remote = t->remote};
	struct path_mtu *p = bpf_map_lookup_elem(&path_mtus, &k);

	if (!p || bpf_ktime_get_ns() >= p->expires)
		return 0;
	return p->mtu;
}

/* Reads an ICMP message of len bytes (from the ICMP header on) that the
 * program copied into s, sent to us: if it is "fragmentation needed" about
 * an outer packet of one of our tunnels, notes the path MTU as the
 * kernel's __ip_rt_update_pmtu does (never below the floor, only ever
 * lower, refreshed after half its life) and says REASON_PATH_MTU. */
static __always_inline enum reason pmtu_note(struct scratch *s, __u32 len, __be32 to)
{
	struct icmphdr *icmp = (void *)s->buf;
	struct iphdr *q = (void *)(icmp + 1);
	struct endpoint_key k = {};
	struct peer_key pk;
	struct path_mtu *p, v;
	__u64 now;
	__u32 mtu, qhl;
	__be16 *gre;
	__u16 flags;

	if (len < ICMP_MSG_MIN || len > SCRATCH_LEN - 4)
		return REASON_NOT_GRE;
	if (scratch_csum(s, len) != 0)
		return REASON_NOT_GRE;
	if (q->version != 4 || q->ihl < 5 || q->protocol != IPPROTO_GRE || q->saddr != to)
		return REASON_NOT_GRE;
	qhl = q->ihl * 4;
	if (sizeof(*icmp) + qhl + GRE_HLEN > len)
		return REASON_NOT_GRE;
	gre = (void *)(s->buf + masked(sizeof(*icmp) + qhl, 127));
	flags = bpf_ntohs(gre[0]);
	if (flags & (GRE_VERSION | GRE_ROUTING))
		return REASON_NOT_GRE;
	if (flags & GRE_KEY) {
		/* The key follows the checksum field when there is one. */
		__u32 koff = sizeof(*icmp) + qhl + GRE_HLEN + ((flags & GRE_CSUM) ? 4 : 0);

		if (koff + 4 > len)
			return REASON_NOT_GRE;
		k.key = *(__be32 *)(s->buf + masked(koff, 127));
		k.keyed = 1;
	}
	/* One of our tunnels sends exactly this. */
	k.local = q->saddr;
	k.remote = q->daddr;
	if (!bpf_map_lookup_elem(&senders, &k))
		return REASON_NOT_GRE;
	pk.local = k.local;
	pk.remote = k.remote;

	mtu = bpf_ntohs(icmp->mtu);
	if (mtu < pmtu_floor)
		mtu = pmtu_floor;
	now = bpf_ktime_get_ns();
	p = bpf_map_lookup_elem(&path_mtus, &pk);
	if (p && now < p->expires) {
		if (mtu > p->mtu)
			return REASON_PATH_MTU;
		if (mtu == p->mtu && now + pmtu_expires_ns / 2 < p->expires)
			return REASON_PATH_MTU;
	}
	v.mtu = mtu;
	v.pad = 0;
	v.expires = now + pmtu_expires_ns;
	bpf_map_update_elem(&path_mtus, &pk, &v, BPF_ANY);
	return REASON_PATH_MTU;
}

/* Whether an IPv4 frame whose outer header ip the caller has checked (and
 * found unfragmented and intact) carries an ICMP "fragmentation needed";
 * its message then starts at *off in the frame and is *len bytes long. */
static __always_inline int is_frag_needed(struct iphdr *ip, void *data_end, __u32 tot,
					  __u32 *off, __u32 *len)
{
	struct icmphdr *icmp = (void *)ip + ip->ihl * 4;

	if (ip->protocol != IPPROTO_ICMP || (void *)(icmp + 1) > data_end)
		return 0;
	if (icmp->type != ICMP_DEST_UNREACH || icmp->code != ICMP_FRAG_NEEDED)
		return 0;
	*off = ETH_HLEN + ip->ihl * 4;
	*len = tot - ip->ihl * 4;
	return 1;
}

/* pmtu_note for an ICMP message decap_classify found in an XDP frame or
 * an skb: the programs copy it whole, so that its checksum can be checked
 * whatever part of it is linear. */
static __always_inline enum reason pmtu_learn_xdp(struct xdp_md *ctx, __u32 off, __u32 len, __be32 to)
{
	struct scratch *s = len >= ICMP_MSG_MIN ? scratch_xdp(ctx, off, len) : NULL;

	return s ? pmtu_note(s, len, to) : REASON_NOT_GRE;
}

static __always_inline enum reason pmtu_learn_skb(struct __sk_buff *skb, __u32 off, __u32 len, __be32 to)
{
	struct scratch *s = len >= ICMP_MSG_MIN ? scratch_skb(skb, off, len) : NULL;

	return s ? pmtu_note(s, len, to) : REASON_NOT_GRE;
}

/* Turns skb, an inner IPv4 packet of inner_len bytes behind an Ethernet
 * header that the tunnel cannot carry (the tunnel MTU is mtu), into the
 * "fragmentation needed" icmp_send would send its sender, and sends it:
 * out where the FIB routes the sender, or, for a sender on this host,
 * into the stack on the tunnel interface (which accepts local sources for
 * this: grebpf sets accept_local there). Returns the TC verdict. */
static __always_inline int send_frag_needed(struct __sk_buff *skb, const struct tunnel *t,
					    __u32 inner_len, __u16 mtu)
{
	struct bpf_fib_lookup fib = {};
	struct icmphdr *icmp;
	struct iphdr orig, *ip;
	struct ethhdr *eth;
	struct scratch *s;
	__be32 *src, from;
	__u32 zero = 0, q = inner_len;
	int local = 0;
	long rc;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &orig, sizeof(orig)))
		return TC_ACT_SHOT;
	s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return TC_ACT_SHOT;
	if (q > ICMP_QUOTE_MAX)
		q = ICMP_QUOTE_MAX;
	if (q < sizeof(orig))
		return TC_ACT_SHOT;

	/* The route back to the sender, as if its reply came in through the
	 * tunnel, and the address the route leaves from. */
	fib.family = AF_INET;
	fib.ipv4_src = orig.daddr;
	fib.ipv4_dst = orig.saddr;
	fib.l4_protocol = IPPROTO_ICMP;
	fib.tot_len = sizeof(orig) + sizeof(*icmp) + q;
	fib.ifindex = t->ifindex;
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_NOT_FWDED || rc == BPF_FIB_LKUP_RET_FWD_DISABLED) {
		local = 1;
		from = orig.saddr;
	} else if (rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		__u32 out = fib.ifindex;
		struct tunnel *via = bpf_map_lookup_elem(&tunnels, &out);

		src = bpf_map_lookup_elem(&iface_addrs, &out);
		if (via)
			from = via->overlay_local;
		else if (src)
			from = *src;
		else
			return TC_ACT_SHOT;
	} else {
		return TC_ACT_SHOT;
	}

	/* The message: ICMP header, then the start of the packet. */
	icmp = (void *)s->buf;
	icmp->type = ICMP_DEST_UNREACH;
	icmp->code = ICMP_FRAG_NEEDED;
	icmp->checksum = 0;
	icmp->unused = 0;
	icmp->mtu = bpf_htons(mtu);
	q = bounded(q, 1023);
	if (bpf_skb_load_bytes(skb, ETH_HLEN, s->buf + sizeof(*icmp), q))
		return TC_ACT_SHOT;
	icmp->checksum = scratch_csum(s, sizeof(*icmp) + q);

	if (bpf_skb_change_tail(skb, ETH_HLEN + q, 0) ||
	    bpf_skb_adjust_room(skb, sizeof(*ip) + sizeof(*icmp), BPF_ADJ_ROOM_MAC, 0) ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + sizeof(*ip), s->buf, sizeof(*icmp), 0))
		return TC_ACT_SHOT;
	eth = (void *)(long)skb->data;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > (void *)(long)skb->data_end)
		return TC_ACT_SHOT;
	ip->version = 4;
	ip->ihl = 5;
	ip->tos = (orig.tos & IPTOS_TOS_MASK) | IPTOS_PREC_INTERNETCONTROL;
	ip->tot_len = bpf_htons(sizeof(*ip) + sizeof(*icmp) + q);
	ip->id = (__be16)bpf_get_prandom_u32();
	ip->frag_off = 0;
	ip->ttl = icmp_ttl;
	ip->protocol = IPPROTO_ICMP;
	ip->check = 0;
	ip->saddr = from;
	ip->daddr = orig.saddr;
	ip->check = ipv4_csum(ip);

	if (local)
		/* The frame is still addressed to the tunnel interface. */
		return bpf_redirect(t->ifindex, BPF_F_INGRESS);
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return bpf_redirect_neigh(fib.ifindex, NULL, 0, 0);
	eth_write_macs(eth, fib.dmac, fib.smac);
	return bpf_redirect(fib.ifindex, 0);
}
