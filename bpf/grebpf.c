//go:build ignore

/* grebpf data plane. A tunnel is an interface (a veth pair, see grebpf.h):
 * whatever the kernel routes out of it reaches encap_tc on the veth peer's
 * ingress (or on the interface's egress, where the user trades tcpdump and
 * counters for speed), which encapsulates and sends it out of the WAN
 * device. GRE arriving on the WAN device is decapsulated in XDP or TC and
 * transmitted on the veth peer, so it enters the stack on the interface.
 * The optional XDP fast path forwards without the stack where the kernel's
 * FIB says a packet goes into or out of a tunnel. Everything not addressed
 * to a configured tunnel passes. */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "grebpf.h"
#include "maps.h"
#include "stats.h"
#include "decap.h"
#include "encap.h"
#include "fib.h"
#include "pmtu.h"

/* Enough linear data for Ethernet, the longer outer header (IPv6 with
 * destination options, IPv4 with options), GRE with every option and the
 * inner IPv6 (or IPv4) header. */
#define DECAP_PULL_LEN (ETH_HLEN + sizeof(struct ipv6hdr) + DSTOPT_SPACE + GRE_MAX_HLEN + 40)

/* bpf_skb_adjust_room's flags that set skb->protocol to the inner
 * packet's on decapsulation (Linux 6.3; the uapi headers here predate
 * them). */
#define ADJ_ROOM_DECAP_L3_IPV4 (1ULL << 7)
#define ADJ_ROOM_DECAP_L3_IPV6 (1ULL << 8)

/* The MAC header as words: a byte-wise memcpy is what clang emits for an
 * ethhdr of unknown alignment, and unaligned word access is fine here. */
struct mac_words {
	__u32 w0, w1, w2;
	__u16 w3;
};

/* Strips d->strip bytes after the MAC header of an XDP frame, keeping the
 * MAC header (it was addressed to us) with the inner packet's EtherType.
 * Programs here are not frags-aware, so the whole frame is between data
 * and data_end, which decap_classify is given as its length. */
static __always_inline int xdp_strip(struct xdp_md *ctx, const struct decap *d)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct mac_words mac, *p = data;

	if ((void *)(p + 1) > data_end)
		return -1;
	mac.w0 = p->w0, mac.w1 = p->w1, mac.w2 = p->w2, mac.w3 = p->w3;
	if (bpf_xdp_adjust_head(ctx, d->strip))
		return -1;
	p = (void *)(long)ctx->data;
	if ((void *)(p + 1) > (void *)(long)ctx->data_end)
		return -1;
	p->w0 = mac.w0, p->w1 = mac.w1, p->w2 = mac.w2;
	p->w3 = d->inner_v6 ? bpf_htons(ETH_P_IPV6) : bpf_htons(ETH_P_IP);
	return 0;
}

/* For the fast path: where the FIB sends the decapsulated packet at l3,
 * when XDP may forward it there itself (BPF_FIB_LKUP_RET_SUCCESS, fib
 * filled); anything else (-1, or the lookup's answer) leaves it to the
 * stack: TTL or hop limit <= 1 (time exceeded), IPv6 the stack would not
 * forward (link-local, multicast), local destinations, transit into
 * another tunnel, unresolved neighbours. */
static __always_inline long inner_fib(struct xdp_md *ctx, void *l3, void *data_end,
				      const struct decap *d, struct bpf_fib_lookup *fib)
{
	__u32 out;
	long rc;

	if (d->inner_v6) {
		struct ipv6hdr *ip6 = l3;

		if ((void *)(ip6 + 1) > data_end || ip6->hop_limit <= 1 || !ipv6_forwardable(ip6))
			return -1;
		fib_forward6(fib, ip6, d->ep->ifindex);
	} else {
		struct iphdr *ip = l3;

		if ((void *)(ip + 1) > data_end || ip->ttl <= 1)
			return -1;
		fib_forward(fib, ip, d->ep->ifindex);
	}
	rc = bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);
	out = fib->ifindex;
	if (rc == BPF_FIB_LKUP_RET_SUCCESS && bpf_map_lookup_elem(&tunnels, &out))
		return -1;
	return rc;
}

/* What decap in XDP tells to_tunnel_tc about a frame it stripped. */
struct decap_meta {
	__u32 magic;
	__u32 ifindex; /* the tunnel interface */
};

#define DECAP_META_MAGIC 0x67726531 /* "gre1" */

/* Decap in XDP strips the headers and passes the inner packet on with
 * its tunnel in the frame's metadata; to_tunnel_tc, on the same device's
 * TC ingress, hands it to the tunnel interface. Redirecting from XDP
 * instead would turn the frame into an xdp_frame and lose what the skb
 * knows, such as a partial checksum from a veth sender. With forward (the
 * fast path) the frame goes straight to where the FIB sends the inner
 * packet when inner_fib says XDP may. */
static __always_inline int xdp_decap(struct xdp_md *ctx, int forward)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct bpf_fib_lookup fib = {};
	struct decap_meta *meta;
	struct ethhdr *eth;
	struct decap d;
	enum reason r;
	__u32 out;
	long rc = -1;

	r = decap_classify(data, data_end, data_end - data, &d);
	if (d.icmp.len)
		r = pmtu_learn_xdp(ctx, &d.icmp);
	if (r == REASON_NONE && d.gre_csum) {
		struct scratch *s = scratch_xdp(ctx, d.gre_off, d.gre_len);

		if (!s || scratch_csum(s, d.gre_len))
			r = REASON_GRE_CHECKSUM;
	}
	if (r == REASON_NONE)
		r = inner_accept(ctx, data + ETH_HLEN + d.strip, data_end, &d);
	if (r != REASON_NONE) {
		count_reason(r);
		return reason_passes(r) ? XDP_PASS : XDP_DROP;
	}
	if (forward)
		rc = inner_fib(ctx, data + ETH_HLEN + d.strip, data_end, &d, &fib);
	if (xdp_strip(ctx, &d)) {
		count_reason(REASON_DECAP_FAILED);
		return XDP_DROP;
	}
	count_rx(d.ep->ifindex, 1, d.inner_len);

	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		/* The inner header was there before the strip. */
		if (d.inner_v6) {
			struct ipv6hdr *ip6 = (void *)(eth + 1);

			if ((void *)(ip6 + 1) > data_end)
				return XDP_DROP;
			return xdp_forward6(eth, ip6, &fib);
		} else {
			struct iphdr *ip = (void *)(eth + 1);

			if ((void *)(ip + 1) > data_end)
				return XDP_DROP;
			return xdp_forward(eth, ip, &fib);
		}
	}
	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	/* To the tunnel interface from its veth peer, so that the stack there
	 * takes the frame as its own (PACKET_HOST). */
	eth_write_macs(eth, d.ep->mac, d.ep->peer_mac);
	out = d.ep->ifindex;
	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(struct decap_meta)))
		return XDP_PASS; /* no room: to_tunnel_tc finds no tunnel, counts it */
	data = (void *)(long)ctx->data;
	meta = (void *)(long)ctx->data_meta;
	if ((void *)(meta + 1) > data)
		return XDP_PASS;
	meta->magic = DECAP_META_MAGIC;
	meta->ifindex = out;
	return XDP_PASS;
}

SEC("xdp")
int decap_xdp(struct xdp_md *ctx)
{
	return xdp_decap(ctx, 0);
}

/* Fast path, WAN ingress. */
SEC("xdp")
int fastpath_wan(struct xdp_md *ctx)
{
	return xdp_decap(ctx, 1);
}

/* TC ingress of the WAN device, behind XDP decap: a frame decap_xdp
 * stripped goes to its tunnel interface, anything else on its way. */
SEC("tc")
int to_tunnel_tc(struct __sk_buff *skb)
{
	struct decap_meta *meta = (void *)(long)skb->data_meta;
	struct tunnel *t;
	__u32 dev;

	if ((void *)(meta + 1) > (void *)(long)skb->data || meta->magic != DECAP_META_MAGIC)
		return TC_ACT_OK;
	dev = meta->ifindex;
	t = bpf_map_lookup_elem(&tunnels, &dev);
	if (!t) {
		count_reason(REASON_NO_TUNNEL);
		return TC_ACT_SHOT;
	}
	return bpf_redirect(t->rx_ifindex, 0);
}

/* Strips d->strip bytes after the MAC header of an skb. FIXED_GSO keeps
 * a GRO'd packet's segment size; an inner packet of the outer header's
 * family keeps skb->protocol. Otherwise skb->protocol must become the
 * inner packet's before it goes on, or a GSO packet is segmented as the
 * outer family on its way (TCP over IPv6 in IPv4 moved 0.01 Gbit/s on 6.1
 * without this). 6.3's DECAP_L3 flags do that in the strip; older kernels
 * refuse them, and bpf_skb_change_proto does it there, pushing (IPv4 to
 * IPv6) or popping (IPv6 to IPv4) the 20 bytes the two headers differ by
 * at the outer header, which the strip then adjusts for (it leaves
 * gso_size alone since 5.14). */
static __always_inline int strip_tc(struct __sk_buff *skb, const struct decap *d)
{
	const __s32 diff = sizeof(struct ipv6hdr) - sizeof(struct iphdr);
	__s32 strip = d->strip;

	if (d->inner_v6 == d->outer_v6)
		return bpf_skb_adjust_room(skb, -strip, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO);
	if (!bpf_skb_adjust_room(skb, -strip, BPF_ADJ_ROOM_MAC,
				 BPF_F_ADJ_ROOM_FIXED_GSO |
					 (d->inner_v6 ? ADJ_ROOM_DECAP_L3_IPV6 : ADJ_ROOM_DECAP_L3_IPV4)))
		return 0;
	if (bpf_skb_change_proto(skb, d->inner_v6 ? bpf_htons(ETH_P_IPV6) : bpf_htons(ETH_P_IP), 0))
		return -1;
	return bpf_skb_adjust_room(skb, -(strip + (d->inner_v6 ? diff : -diff)), BPF_ADJ_ROOM_MAC,
				   BPF_F_ADJ_ROOM_FIXED_GSO);
}

SEC("tc")
int decap_tc(struct __sk_buff *skb)
{
	const struct endpoint *ep;
	struct ethhdr *eth;
	struct decap d;
	enum reason r;

	if ((void *)(long)skb->data + DECAP_PULL_LEN > (void *)(long)skb->data_end)
		bpf_skb_pull_data(skb, skb->len < DECAP_PULL_LEN ? skb->len : DECAP_PULL_LEN);

	r = decap_classify((void *)(long)skb->data, (void *)(long)skb->data_end,
			   skb->len, &d);
	if (d.icmp.len)
		r = pmtu_learn_skb(skb, &d.icmp);
	/* GRO merges GRE packets only once their checksums are verified. */
	if (r == REASON_NONE && d.gre_csum && skb->gso_segs <= 1) {
		struct scratch *s = scratch_skb(skb, d.gre_off, d.gre_len);

		if (!s || scratch_csum(s, d.gre_len))
			r = REASON_GRE_CHECKSUM;
	}
	if (r != REASON_NONE) {
		count_reason(r);
		return reason_passes(r) ? TC_ACT_OK : TC_ACT_SHOT;
	}
	ep = d.ep;
	r = inner_accept(skb, (void *)(long)skb->data + ETH_HLEN + d.strip, (void *)(long)skb->data_end, &d);
	if (r != REASON_NONE) {
		count_reason(r);
		return TC_ACT_SHOT;
	}

	if (strip_tc(skb, &d)) {
		count_reason(REASON_DECAP_FAILED);
		return TC_ACT_SHOT;
	}
	eth = (void *)(long)skb->data;
	if ((void *)(eth + 1) > (void *)(long)skb->data_end) {
		count_reason(REASON_DECAP_FAILED);
		return TC_ACT_SHOT;
	}
	eth_write_macs(eth, ep->mac, ep->peer_mac); /* as in xdp_decap */
	eth->h_proto = d.inner_v6 ? bpf_htons(ETH_P_IPV6) : bpf_htons(ETH_P_IP);
	count_rx(ep->ifindex, skb->gso_segs ? skb->gso_segs : 1, d.inner_len);
	return bpf_redirect(ep->rx_ifindex, 0);
}

/* Whether the inner packet ip, too big for the tunnel, may have ICMP sent
 * about it: icmp_send's rules (no errors about errors, about non-first
 * fragments, or to or from addresses that are not one host's). */
static __always_inline int icmp_may_answer(struct __sk_buff *skb, const struct iphdr *ip)
{
	__u8 src = bpf_ntohl(ip->saddr) >> 24, type;

	/* Sources the kernel would not have forwarded (this net, loopback,
	 * multicast, reserved, broadcast), destinations that are not one host. */
	if (ip->frag_off & bpf_htons(IP_OFFSET) || src == 0 || src == 127 || src >= 224 ||
	    (bpf_ntohl(ip->daddr) >> 28) >= 14)
		return 0;
	if (ip->protocol != IPPROTO_ICMP)
		return 1;
	if (bpf_skb_load_bytes(skb, ETH_HLEN + ip->ihl * 4, &type, 1))
		return 0;
	return type != ICMP_DEST_UNREACH && type != ICMP_SOURCE_QUENCH && type != ICMP_REDIRECT &&
	       type != ICMP_TIME_EXCEEDED && type != ICMP_PARAMETERPROB;
}

/* Runs where the kernel's packets for a tunnel arrive: the ingress of the
 * interface's veth peer, or the interface's own egress. */
SEC("tc")
int encap_tc(struct __sk_buff *skb)
{
	struct bpf_fib_lookup fib = {};
	__u32 dev = skb->ifindex;
	struct inner_hdr in;
	struct tunnel *t;
	struct ethhdr *eth;
	struct iphdr *ip;
	__u32 segs, hlen, mtu, pmtu, len, need, flowlabel = 0;
	int gso, v6, outer6;
	long rc;

	t = bpf_map_lookup_elem(&tunnels, &dev);
	if (!t) {
		count_reason(REASON_NO_TUNNEL);
		return TC_ACT_SHOT;
	}
	v6 = skb->protocol == bpf_htons(ETH_P_IPV6);
	if (skb->protocol != bpf_htons(ETH_P_IP) && !v6) {
		count_reason(REASON_UNKNOWN_INNER);
		return TC_ACT_SHOT;
	}
	need = ETH_HLEN + (v6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr));
	if ((void *)(long)skb->data + need > (void *)(long)skb->data_end &&
	    bpf_skb_pull_data(skb, need)) {
		count_reason(REASON_TRUNCATED);
		return TC_ACT_SHOT;
	}
	if (inner_read((void *)(long)skb->data + ETH_HLEN, (void *)(long)skb->data_end,
		       skb->protocol, &in)) {
		count_reason(REASON_TRUNCATED);
		return TC_ACT_SHOT;
	}
	segs = skb->gso_segs ? skb->gso_segs : 1;
	gso = skb->gso_size != 0;
	hlen = encap_len(t);
	outer6 = !!(t->flags & TUNNEL_F_OUTER_V6);
	if (outer6)
		flowlabel = flowlabel_of(bpf_get_hash_recalc(skb));
	/* The packet's size as ip_gre measures it: what the stack handed
	 * over, whatever the header claims. */
	len = skb->len - ETH_HLEN + hlen;

	/* The outer route, and what fits it: the route's MTU (the WAN
	 * device's, followed as it changes) and the path MTU ICMP taught us.
	 * As in ip_gre, a GSO packet is not measured: its segments are. */
	fib_outer(&fib, t, gso || len > 0xffff ? 0 : len);
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_OUTPUT);
	mtu = rc == BPF_FIB_LKUP_RET_FRAG_NEEDED ? fib.mtu_result : 0xffff;
	if (!gso && len > pmtu_floor) {
		pmtu = path_mtu_of(t);
		if (pmtu && pmtu < mtu)
			mtu = pmtu;
	}
	if (!gso && len > mtu) {
		/* ip_gre's tnl_update_pmtu: IPv4 with DF gets "fragmentation
		 * needed"; IPv6 gets "packet too big" unless the outer header
		 * copies no DF (pmtudisc off) or the tunnel MTU would be below
		 * IPv6's minimum. ip6gre answers every packet that does not
		 * fit, DF or not, with the tunnel MTU raised to IPv6's minimum
		 * for IPv6 (what then still does not fit, it would fragment). */
		__u32 tmtu = mtu - hlen;

		if (v6 && outer6 && tmtu < IPV6_MIN_MTU)
			tmtu = IPV6_MIN_MTU;
		if (v6 && len - hlen > tmtu &&
		    (outer6 || (!(t->flags & TUNNEL_F_NOPMTUDISC) && tmtu >= IPV6_MIN_MTU))) {
			struct ipv6hdr *ip6 = (void *)(long)skb->data + ETH_HLEN;

			count_reason(REASON_PACKET_TOO_BIG);
			if ((void *)(ip6 + 1) > (void *)(long)skb->data_end || !icmp6_may_answer(skb, ip6))
				return TC_ACT_SHOT;
			return send_pkt_too_big(skb, t, len - hlen, tmtu);
		}
		if (!v6 && (in.df || outer6)) {
			ip = (void *)(long)skb->data + ETH_HLEN;
			count_reason(REASON_FRAG_NEEDED);
			if ((void *)(ip + 1) > (void *)(long)skb->data_end || !icmp_may_answer(skb, ip))
				return TC_ACT_SHOT;
			return send_frag_needed(skb, t, len - hlen, tmtu);
		}
		if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED) {
			/* ip_gre would fragment the outer packet; a BPF
			 * program cannot. The tunnel interface's MTU, sized
			 * from the WAN device's, keeps this to a WAN MTU
			 * lowered after attach. */
			count_reason(REASON_OUTER_TOO_BIG);
			return TC_ACT_SHOT;
		}
		/* Over only the learned path MTU: sent with DF all the same,
		 * as ip_gre sends it, and the path answers. */
	}

	if (gso && (t->flags & (TUNNEL_F_OSEQ | TUNNEL_F_OCSUM))) {
		/* Segments cannot be numbered or summed one by one here; the
		 * tunnel interface has its segmentation offloads off for this. */
		count_reason(REASON_ENCAP_FAILED);
		return TC_ACT_SHOT;
	}

	/* FIXED_GSO + ENCAP flags: a TSO/GSO packet stays one packet and the
	 * kernel segments it as GRE further down. The kernel refuses the
	 * flags on a packet it still marks as encapsulated: one a BPF decap
	 * handed on (nothing there can clear the mark), in transit from
	 * another tunnel. A single packet needs no GSO state, so it is
	 * encapsulated without them; a GSO one cannot be, and is counted. */
	if (bpf_skb_adjust_room(skb, hlen, BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L4_GRE |
					(outer6 ? BPF_F_ADJ_ROOM_ENCAP_L3_IPV6 : BPF_F_ADJ_ROOM_ENCAP_L3_IPV4)) &&
	    (skb->gso_segs > 1 || bpf_skb_adjust_room(skb, hlen, BPF_ADJ_ROOM_MAC, 0))) {
		count_reason(REASON_ENCAP_FAILED);
		return TC_ACT_SHOT;
	}
	eth = (void *)(long)skb->data;
	if ((void *)(eth + 1) > (void *)(long)skb->data_end ||
	    encap_write(eth + 1, (void *)(long)skb->data_end, t, &in, skb->len - ETH_HLEN,
			(t->flags & TUNNEL_F_OSEQ) ? next_seqno(t) : 0, flowlabel)) {
		count_reason(REASON_ENCAP_FAILED);
		return TC_ACT_SHOT;
	}
	eth->h_proto = outer_proto(t);
	if (t->flags & TUNNEL_F_OCSUM) {
		__u32 off = ETH_HLEN + outer_ip_len(t), glen = skb->len - off;
		struct scratch *s = scratch_skb(skb, off, glen);
		__u16 sum;

		if (!s) {
			count_reason(REASON_ENCAP_FAILED);
			return TC_ACT_SHOT;
		}
		sum = scratch_csum(s, glen);
		if (bpf_skb_store_bytes(skb, off + 4, &sum, sizeof(sum), 0)) {
			count_reason(REASON_ENCAP_FAILED);
			return TC_ACT_SHOT;
		}
		eth = (void *)(long)skb->data; /* the store moved it, for the verifier */
		if ((void *)(eth + 1) > (void *)(long)skb->data_end) {
			count_reason(REASON_ENCAP_FAILED);
			return TC_ACT_SHOT;
		}
	}

	switch (rc) {
	case BPF_FIB_LKUP_RET_SUCCESS:
		eth_write_macs(eth, fib.dmac, fib.smac);
		count_tx(t->ifindex, segs, in.len);
		return bpf_redirect(fib.ifindex, 0);
	case BPF_FIB_LKUP_RET_NO_NEIGH:
		/* No next hop given: the helper routes the outer packet itself
		 * and queues it on the neighbour until it resolves. */
		count_tx(t->ifindex, segs, in.len);
		return bpf_redirect_neigh(fib.ifindex, NULL, 0, 0);
	case BPF_FIB_LKUP_RET_FWD_DISABLED:
		/* An endpoint that does not forward: the helper will not look up
		 * for us, so let bpf_redirect_neigh route the outer packet. */
		count_tx(t->ifindex, segs, in.len);
		return bpf_redirect_neigh(t->wan_ifindex, NULL, 0, 0);
	default:
		count_reason(REASON_NO_OUTER_ROUTE);
		return TC_ACT_SHOT;
	}
}

/* Fast path, LAN ingress: what the stack plus encap_tc would do to a packet
 * the FIB routes into a tunnel, done here and redirected out of the WAN
 * device. Anything else, TTL or hop limit <= 1, IPv4 options, IPv6 the
 * stack would not forward, packets over the tunnel MTU (the stack and
 * encap_tc answer the sender) and unresolved outer next hops, go to the
 * stack. */
SEC("xdp")
int fastpath_lan(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct bpf_fib_lookup fib = {};
	struct ethhdr *eth = data;
	struct inner_hdr in;
	struct iphdr *ip;
	struct tunnel *t;
	__u32 hlen, out, flowlabel = 0;
	long rc;

	if ((void *)(eth + 1) > data_end || inner_read(eth + 1, data_end, eth->h_proto, &in) ||
	    in.ttl <= 1)
		return XDP_PASS;
	/* A tunnel interface has no neighbours to resolve (NOARP): NO_NEIGH
	 * still names the egress. */
	if (in.proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end || !ipv6_forwardable(ip6))
			return XDP_PASS;
		fib_forward6(&fib, ip6, ctx->ingress_ifindex);
	} else {
		ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > data_end || ip->ihl != 5)
			return XDP_PASS;
		fib_forward(&fib, ip, ctx->ingress_ifindex);
	}
	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return XDP_PASS;
	out = fib.ifindex;
	t = bpf_map_lookup_elem(&tunnels, &out);
	if (!t)
		return XDP_PASS;
	hlen = encap_len(t);
	/* Over the path MTU the stack and encap_tc answer the sender. */
	if (in.len + hlen > pmtu_floor) {
		__u32 pmtu = path_mtu_of(t);

		if (pmtu && in.len + hlen > pmtu)
			return XDP_PASS;
	}

	__builtin_memset(&fib, 0, sizeof(fib));
	fib_outer(&fib, t, in.len + hlen);
	if (bpf_fib_lookup(ctx, &fib, sizeof(fib), BPF_FIB_LOOKUP_OUTPUT) != BPF_FIB_LKUP_RET_SUCCESS)
		return XDP_PASS;

	in.ttl--; /* what the outer header inherits is the forwarded packet's */
	if (t->flags & TUNNEL_F_OUTER_V6)
		flowlabel = flowlabel_of(inner_hash(eth + 1, data_end, in.proto));
	if (bpf_xdp_adjust_head(ctx, -(int)hlen))
		return XDP_PASS;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	if (in.proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1) + masked(hlen, 127);

		if ((void *)(ip6 + 1) > data_end)
			return XDP_DROP; /* cannot happen: the inner header was there */
		ip6->hop_limit--;
	} else {
		struct iphdr *inner = (void *)(eth + 1) + masked(hlen, 127);

		if ((void *)(inner + 1) > data_end)
			return XDP_DROP;
		ipv4_dec_ttl(inner);
	}
	eth_write_macs(eth, fib.dmac, fib.smac);
	eth->h_proto = outer_proto(t);
	if (encap_write(eth + 1, data_end, t, &in, in.len + hlen,
			(t->flags & TUNNEL_F_OSEQ) ? next_seqno(t) : 0, flowlabel))
		return XDP_DROP;
	if (t->flags & TUNNEL_F_OCSUM) {
		__u32 off = ETH_HLEN + outer_ip_len(t), glen = in.len + hlen - outer_ip_len(t);
		struct scratch *s = scratch_xdp(ctx, off, glen);
		__u16 *sum;

		data = (void *)(long)ctx->data;
		sum = data + masked(off + 4, 127);
		if (!s || (void *)(sum + 1) > (void *)(long)ctx->data_end) {
			count_reason(REASON_ENCAP_FAILED);
			return XDP_DROP;
		}
		*sum = scratch_csum(s, glen);
	}
	count_tx(t->ifindex, 1, in.len);
	return bpf_redirect(fib.ifindex, 0);
}

char _license[] SEC("license") = "GPL";
