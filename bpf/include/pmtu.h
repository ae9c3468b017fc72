/* Path MTU discovery as ip_gre and ip6gre do it: an ICMP "fragmentation
 * needed" or ICMPv6 "packet too big" about one of our outer packets lowers
 * the path MTU to that remote (gre_err's ipv4_update_pmtu, ip6gre_err's
 * ip6_update_pmtu), and the next inner packet that no longer fits gets
 * "fragmentation needed" or "packet too big" with the tunnel MTU sent to
 * its sender (tnl_update_pmtu's icmp_ndo_send). */
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
#include "ipv6.h"
#include "maps.h"
#include "outer.h"

/* The namespace's sysctls, set by the loader: net.ipv4.route.min_pmtu,
 * net.ipv4.route.mtu_expires, net.ipv6.route.mtu_expires,
 * net.ipv4.ip_default_ttl and net.ipv6.conf.all.hop_limit. */
volatile const __u32 pmtu_floor = 552;
volatile const __u64 pmtu_expires_ns = 600ULL * 1000000000ULL;
volatile const __u64 pmtu6_expires_ns = 600ULL * 1000000000ULL;
volatile const __u8 icmp_ttl = 64;
volatile const __u8 icmp6_hop_limit = 64;

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

/* An ICMP error to us that decap found: where its message (from the
 * ICMP header on) is in the frame, its length (0: none), and the outer
 * addresses it came with. */
struct icmp_found {
	__u32 off, len;
	__u8 v6;
	struct outer_addr from, to;
};

/* The shortest message pmtu_note reads: ICMP header, the quoted IPv4
 * header, the GRE header. */
#define ICMP_MSG_MIN (sizeof(struct icmphdr) + sizeof(struct iphdr) + GRE_HLEN)

/* icmp_send quotes at most what fits a 576-byte datagram. */
#define ICMP_QUOTE_MAX (576 - sizeof(struct iphdr) - sizeof(struct icmphdr))

#define ICMPV6_PKT_TOOBIG 2

/* An ICMPv6 "packet too big" header. */
struct icmp6_too_big {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be32 mtu;
};

/* The pseudo-header an ICMPv6 checksum covers (RFC 8200 8.1). */
struct icmp6_pseudo {
	struct in6_addr src, dst;
	__be32 len;
	__be32 nexthdr;
};

#define ICMP6_MSG_MIN (sizeof(struct icmp6_too_big) + sizeof(struct ipv6hdr) + GRE_HLEN)

/* The learned path MTU towards a tunnel's remote, if one holds now. */
static __always_inline __u32 path_mtu_of(const struct tunnel *t)
{
	struct peer_key k = {.local = t->local, .remote = t->remote};
	struct path_mtu *p = bpf_map_lookup_elem(&path_mtus, &k);

	if (!p || bpf_ktime_get_ns() >= p->expires)
		return 0;
	return p->mtu;
}

/* Notes mtu for the path pk as the kernel's __ip_rt_update_pmtu and
 * __ip6_rt_update_pmtu do: only ever lower, refreshed after half its
 * life, expiring after expires_ns. */
static __always_inline enum reason pmtu_update(const struct peer_key *pk, __u32 mtu, __u64 expires_ns)
{
	struct path_mtu *p, v;
	__u64 now = bpf_ktime_get_ns();

	p = bpf_map_lookup_elem(&path_mtus, pk);
	if (p && now < p->expires) {
		if (mtu > p->mtu)
			return REASON_PATH_MTU;
		if (mtu == p->mtu && now + expires_ns / 2 < p->expires)
			return REASON_PATH_MTU;
	}
	v.mtu = mtu;
	v.pad = 0;
	v.expires = now + expires_ns;
	bpf_map_update_elem(&path_mtus, pk, &v, BPF_ANY);
	return REASON_PATH_MTU;
}

/* The key of the GRE header at off in s (flags read there), when it is
 * one that a tunnel sends (version 0, no routing): k->key and k->keyed
 * set, 0; -1 for anything else. */
static __always_inline int quoted_gre(struct scratch *s, __u32 off, __u32 len, struct endpoint_key *k)
{
	__be16 *gre;
	__u16 flags;

	/* Within the first 128 bytes, where the masks below keep it. */
	if (off + GRE_HLEN > len || off + 8 > 127)
		return -1;
	gre = (void *)(s->buf + masked(off, 127));
	flags = bpf_ntohs(gre[0]);
	if (flags & (GRE_VERSION | GRE_ROUTING))
		return -1;
	if (flags & GRE_KEY) {
		/* The key follows the checksum field when there is one. */
		__u32 koff = off + GRE_HLEN + ((flags & GRE_CSUM) ? 4 : 0);

		if (koff + 4 > len)
			return -1;
		k->key = *(__be32 *)(s->buf + masked(koff, 127));
		k->keyed = 1;
	}
	return 0;
}

/* Reads an ICMP message that the program copied into s, sent to us: if it
 * is "fragmentation needed" about an outer packet of one of our tunnels,
 * notes the path MTU (never below the floor) and says REASON_PATH_MTU. */
static __always_inline enum reason pmtu_note4(struct scratch *s, const struct icmp_found *f)
{
	struct icmphdr *icmp = (void *)s->buf;
	struct iphdr *q = (void *)(icmp + 1);
	struct endpoint_key k = {};
	struct peer_key pk;
	__u32 mtu, len = f->len;

	if (len < ICMP_MSG_MIN || len > SCRATCH_LEN - 4)
		return REASON_NOT_GRE;
	if (scratch_csum(s, len) != 0)
		return REASON_NOT_GRE;
	if (q->version != 4 || q->ihl < 5 || q->protocol != IPPROTO_GRE || q->saddr != outer_addr4(&f->to))
		return REASON_NOT_GRE;
	if (quoted_gre(s, sizeof(*icmp) + q->ihl * 4, len, &k))
		return REASON_NOT_GRE;
	/* One of our tunnels sends exactly this. */
	outer_addr_set4(&k.local, q->saddr);
	outer_addr_set4(&k.remote, q->daddr);
	if (!bpf_map_lookup_elem(&senders, &k))
		return REASON_NOT_GRE;
	pk.local = k.local;
	pk.remote = k.remote;
	mtu = bpf_ntohs(icmp->mtu);
	return pmtu_update(&pk, mtu < pmtu_floor ? pmtu_floor : mtu, pmtu_expires_ns);
}

/* pmtu_note4 for an ICMPv6 "packet too big": the quoted packet is an
 * outer IPv6 header, GRE after it or after ip6gre's destination options;
 * the path MTU is never below IPv6's minimum, as ip6_update_pmtu keeps it. */
static __always_inline enum reason pmtu_note6(struct scratch *s, const struct icmp_found *f)
{
	struct icmp6_too_big *icmp = (void *)s->buf;
	struct ipv6hdr *q = (void *)(icmp + 1);
	struct icmp6_pseudo ph = {};
	struct endpoint_key k = {};
	struct peer_key pk;
	__u32 mtu, len = f->len, off = sizeof(*icmp) + sizeof(*q);
	__u8 nh;

	if (len < ICMP6_MSG_MIN || len > SCRATCH_LEN - 4)
		return REASON_NOT_GRE;
	outer_addr_get6(&ph.src, &f->from);
	outer_addr_get6(&ph.dst, &f->to);
	ph.len = bpf_htonl(len);
	ph.nexthdr = bpf_htonl(IPPROTO_ICMPV6);
	if (scratch_csum_after(s, len, bpf_csum_diff(NULL, 0, (void *)&ph, sizeof(ph), 0)) != 0)
		return REASON_NOT_GRE;
	outer_addr_set6(&k.local, &q->saddr);
	outer_addr_set6(&k.remote, &q->daddr);
	if (q->version != 6 || !outer_addr_eq(&k.local, &f->to))
		return REASON_NOT_GRE;
	nh = q->nexthdr;
	if (nh == IPPROTO_DSTOPTS) {
		if (off + 2 > len)
			return REASON_NOT_GRE;
		nh = s->buf[masked(off, 127)];
		off += (s->buf[masked(off + 1, 127)] + 1) * 8;
	}
	if (nh != IPPROTO_GRE || quoted_gre(s, off, len, &k))
		return REASON_NOT_GRE;
	if (!bpf_map_lookup_elem(&senders, &k))
		return REASON_NOT_GRE;
	pk.local = k.local;
	pk.remote = k.remote;
	mtu = bpf_ntohl(icmp->mtu);
	return pmtu_update(&pk, mtu < IPV6_MIN_MTU ? IPV6_MIN_MTU : mtu, pmtu6_expires_ns);
}

/* Whether an IPv4 frame whose outer header ip the caller has checked (and
 * found unfragmented and intact) carries an ICMP "fragmentation needed";
 * f then says where its message is. */
static __always_inline int is_frag_needed(struct iphdr *ip, void *data_end, __u32 tot, struct icmp_found *f)
{
	struct icmphdr *icmp = (void *)ip + ip->ihl * 4;

	if (ip->protocol != IPPROTO_ICMP || (void *)(icmp + 1) > data_end)
		return 0;
	if (icmp->type != ICMP_DEST_UNREACH || icmp->code != ICMP_FRAG_NEEDED)
		return 0;
	f->off = ETH_HLEN + ip->ihl * 4;
	f->len = tot - ip->ihl * 4;
	return 1;
}

/* is_frag_needed for an ICMPv6 "packet too big" straight after an IPv6
 * header whose length (tot) the caller has checked. */
static __always_inline int is_pkt_too_big(struct ipv6hdr *ip6, void *data_end, __u32 tot, struct icmp_found *f)
{
	struct icmp6_too_big *icmp = (void *)(ip6 + 1);

	if ((void *)(icmp + 1) > data_end || icmp->type != ICMPV6_PKT_TOOBIG || icmp->code != 0)
		return 0;
	f->off = ETH_HLEN + sizeof(*ip6);
	f->len = tot - sizeof(*ip6);
	return 1;
}

static __always_inline enum reason pmtu_note(struct scratch *s, const struct icmp_found *f)
{
	return f->v6 ? pmtu_note6(s, f) : pmtu_note4(s, f);
}

/* pmtu_note for an ICMP message decap_classify found in an XDP frame or
 * an skb: the programs copy it whole, so that its checksum can be checked
 * whatever part of it is linear. */
static __always_inline enum reason pmtu_learn_xdp(struct xdp_md *ctx, const struct icmp_found *f)
{
	struct scratch *s = f->len >= ICMP_MSG_MIN ? scratch_xdp(ctx, f->off, f->len) : NULL;

	return s ? pmtu_note(s, f) : REASON_NOT_GRE;
}

static __always_inline enum reason pmtu_learn_skb(struct __sk_buff *skb, const struct icmp_found *f)
{
	struct scratch *s = f->len >= ICMP_MSG_MIN ? scratch_skb(skb, f->off, f->len) : NULL;

	return s ? pmtu_note(s, f) : REASON_NOT_GRE;
}

/* Sends the ICMP or ICMPv6 error skb now holds (eth its MAC header) back
 * to the sender: for a sender on this host, into the stack on the tunnel
 * interface (the frame is still addressed to it); otherwise where the
 * route back leads (rc and fib, the lookup's answer). */
static __always_inline int icmp_send_back(struct __sk_buff *skb, const struct tunnel *t, int local,
					  long rc, const struct bpf_fib_lookup *fib, struct ethhdr *eth)
{
	if (local)
		return bpf_redirect(t->ifindex, BPF_F_INGRESS);
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return bpf_redirect_neigh(fib->ifindex, NULL, 0, 0);
	eth_write_macs(eth, fib->dmac, fib->smac);
	return bpf_redirect(fib->ifindex, 0);
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

	return icmp_send_back(skb, t, local, rc, &fib, eth);
}

/* icmp6_send quotes as much as keeps the error within the minimum MTU. */
#define ICMP6_QUOTE_MAX (IPV6_MIN_MTU - sizeof(struct ipv6hdr) - sizeof(struct icmp6_too_big))

/* What a "packet too big" we send is summed from: the pseudo-header, then
 * the ICMPv6 header. */
struct icmp6_head {
	struct icmp6_pseudo ph;
	struct icmp6_too_big icmp;
};

/* Whether icmp6_send would answer the inner packet ip6: a sender that is
 * one host, and not about an ICMPv6 error (a "packet too big" about a
 * multicast destination is allowed, RFC 4443 2.4). Only an ICMPv6 header
 * straight after the fixed header is recognised. */
static __always_inline int icmp6_may_answer(struct __sk_buff *skb, const struct ipv6hdr *ip6)
{
	__u8 type;

	if (!ipv6_unicast_source(&ip6->saddr))
		return 0;
	if (ip6->nexthdr != IPPROTO_ICMPV6)
		return 1;
	if (bpf_skb_load_bytes(skb, ETH_HLEN + sizeof(*ip6), &type, 1))
		return 0;
	return type >= 128;
}

/* send_frag_needed for an inner IPv6 packet: turns skb into the "packet
 * too big" icmp6_send would send its sender, with the tunnel MTU, and
 * sends it the same ways. Its source is the address of the device the
 * route back leaves through (iface_addrs6), or for a sender on this host
 * the sender's own address; hop limit the namespace's,
 * traffic class 0, flow label from the packet's flow hash (the kernel
 * labels it from a hash of its own). */
static __always_inline int send_pkt_too_big(struct __sk_buff *skb, const struct tunnel *t,
					    __u32 inner_len, __u32 mtu)
{
	struct bpf_fib_lookup fib = {};
	struct icmp6_head h = {};
	struct ipv6hdr orig, *ip6;
	struct in6_addr *src;
	struct ethhdr *eth;
	struct scratch *s;
	__u32 zero = 0, q = inner_len, out, seed;
	int local = 0;
	long rc = 0;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &orig, sizeof(orig)))
		return TC_ACT_SHOT;
	s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return TC_ACT_SHOT;
	if (q > ICMP6_QUOTE_MAX)
		q = ICMP6_QUOTE_MAX;
	if (q < sizeof(orig))
		return TC_ACT_SHOT;

	/* A sender on this host: one of its addresses, or link-local
	 * (nothing forwards from one). */
	if (ipv6_link_local(&orig.saddr) || bpf_map_lookup_elem(&local_addrs6, &orig.saddr)) {
		local = 1;
		h.ph.src = orig.saddr;
	} else {
		fib.family = AF_INET6;
		in6_copy(fib.ipv6_src, &orig.daddr);
		in6_copy(fib.ipv6_dst, &orig.saddr);
		fib.l4_protocol = IPPROTO_ICMPV6;
		fib.tot_len = sizeof(orig) + sizeof(h.icmp) + q;
		fib.ifindex = t->ifindex;
		rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
		if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
			return TC_ACT_SHOT; /* no route back: icmp6_send sends nothing either */
		out = fib.ifindex;
		src = bpf_map_lookup_elem(&iface_addrs6, &out);
		if (!src)
			return TC_ACT_SHOT;
		h.ph.src = *src;
	}
	h.ph.dst = orig.saddr;
	h.ph.len = bpf_htonl(sizeof(h.icmp) + q);
	h.ph.nexthdr = bpf_htonl(IPPROTO_ICMPV6);
	h.icmp.type = ICMPV6_PKT_TOOBIG;
	h.icmp.mtu = bpf_htonl(mtu);

	/* The quote in the scratch buffer, summed after the headers. */
	q = bounded(q, SCRATCH_LEN - 1);
	if (bpf_skb_load_bytes(skb, ETH_HLEN, s->buf, q))
		return TC_ACT_SHOT;
	seed = bpf_csum_diff(NULL, 0, (void *)&h, sizeof(h), 0);
	h.icmp.checksum = scratch_csum_after(s, q, seed);

	if (bpf_skb_change_tail(skb, ETH_HLEN + q, 0) ||
	    bpf_skb_adjust_room(skb, sizeof(*ip6) + sizeof(h.icmp), BPF_ADJ_ROOM_MAC, 0) ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + sizeof(*ip6), &h.icmp, sizeof(h.icmp), 0))
		return TC_ACT_SHOT;
	eth = (void *)(long)skb->data;
	ip6 = (void *)(eth + 1);
	if ((void *)(ip6 + 1) > (void *)(long)skb->data_end)
		return TC_ACT_SHOT;
	*(__be32 *)ip6 = bpf_htonl(6 << 28 | (bpf_get_hash_recalc(skb) & 0xfffff));
	ip6->payload_len = bpf_htons(sizeof(h.icmp) + q);
	ip6->nexthdr = IPPROTO_ICMPV6;
	ip6->hop_limit = icmp6_hop_limit;
	ip6->saddr = h.ph.src;
	ip6->daddr = h.ph.dst;

	return icmp_send_back(skb, t, local, rc, &fib, eth);
}
