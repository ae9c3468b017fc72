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

/* Enough linear data for Ethernet, outer IPv4 with options, keyed GRE and
 * the inner IPv4 header. */
#define DECAP_PULL_LEN (ETH_HLEN + 60 + GRE_MAX_HLEN + 20)

/* The MAC header as words: a byte-wise memcpy is what clang emits for an
 * ethhdr of unknown alignment, and unaligned word access is fine here. */
struct mac_words {
	__u32 w0, w1, w2;
	__u16 w3;
};

/* Strips d->strip bytes after the MAC header of an XDP frame, keeping the
 * MAC header: it was addressed to us, and the inner packet is IPv4 like the
 * outer one. Programs here are not frags-aware, so the whole frame is
 * between data and data_end, which decap_classify is given as its length. */
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
	p->w0 = mac.w0, p->w1 = mac.w1, p->w2 = mac.w2, p->w3 = mac.w3;
	return 0;
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
 * packet when that is not a tunnel and the neighbour is known. What the
 * stack does better stays with it: TTL <= 1 (time exceeded), local
 * destinations, transit into another tunnel, unresolved neighbours. */
static __always_inline int xdp_decap(struct xdp_md *ctx, int forward)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct bpf_fib_lookup fib = {};
	struct decap_meta *meta;
	struct iphdr *inner;
	struct ethhdr *eth;
	struct decap d;
	enum reason r;
	__u32 out;
	long rc = -1;

	r = decap_classify(data, data_end, data_end - data, &d);
	if (d.icmp_len)
		r = pmtu_learn_xdp(ctx, d.icmp_off, d.icmp_len, d.icmp_to);
	if (r == REASON_NONE && d.gre_csum) {
		struct scratch *s = scratch_xdp(ctx, d.gre_off, d.gre_len);

		if (!s || scratch_csum(s, d.gre_len))
			r = REASON_GRE_CHECKSUM;
	}
	if (r != REASON_NONE) {
		count_reason(r);
		return reason_passes(r) ? XDP_PASS : XDP_DROP;
	}
	inner = data + ETH_HLEN + d.strip;
	if ((void *)(inner + 1) > data_end)
		return XDP_PASS; /* decap_classify has checked it; for the verifier */
	if (!inner_source_ok(ctx, inner, d.ep)) {
		count_reason(REASON_INNER_SOURCE);
		return XDP_DROP;
	}
	if (!ecn_decap(d.outer_ecn, inner)) {
		count_reason(REASON_ECN_NOT_ECT);
		return XDP_DROP;
	}
	if (forward && inner->ttl > 1) {
		fib_forward(&fib, inner, d.ep->ifindex);
		rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
		out = fib.ifindex;
		if (rc == BPF_FIB_LKUP_RET_SUCCESS && bpf_map_lookup_elem(&tunnels, &out))
			rc = -1;
	}
	if (xdp_strip(ctx, &d)) {
		count_reason(REASON_DECAP_FAILED);
		return XDP_DROP;
	}
	count_rx(d.ep->ifindex, 1, d.inner_len);

	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	inner = (void *)(eth + 1);
	if ((void *)(inner + 1) > data_end)
		return XDP_DROP; /* cannot happen: the inner header was there */
	if (rc == BPF_FIB_LKUP_RET_SUCCESS)
		return xdp_forward(eth, inner, &fib);
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

SEC("tc")
int decap_tc(struct __sk_buff *skb)
{
	const struct endpoint *ep;
	struct iphdr *inner;
	struct ethhdr *eth;
	struct decap d;
	enum reason r;

	if ((void *)(long)skb->data + DECAP_PULL_LEN > (void *)(long)skb->data_end)
		bpf_skb_pull_data(skb, skb->len < DECAP_PULL_LEN ? skb->len : DECAP_PULL_LEN);

	r = decap_classify((void *)(long)skb->data, (void *)(long)skb->data_end,
			   skb->len, &d);
	if (d.icmp_len)
		r = pmtu_learn_skb(skb, d.icmp_off, d.icmp_len, d.icmp_to);
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
	inner = (void *)(long)skb->data + ETH_HLEN + d.strip;
	if ((void *)(inner + 1) > (void *)(long)skb->data_end)
		return TC_ACT_OK; /* decap_classify has checked it; for the verifier */
	if (!inner_source_ok(skb, inner, ep)) {
		count_reason(REASON_INNER_SOURCE);
		return TC_ACT_SHOT;
	}
	if (!ecn_decap(d.outer_ecn, inner)) {
		count_reason(REASON_ECN_NOT_ECT);
		return TC_ACT_SHOT;
	}

	/* FIXED_GSO keeps a GRO'd packet's segment size. (6.3's
	 * BPF_F_ADJ_ROOM_DECAP_L3_IPV4 only changes skb->protocol, which IPv4
	 * in IPv4 keeps: every kernel strips the same without it.) */
	if (bpf_skb_adjust_room(skb, -(__s32)d.strip, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO)) {
		count_reason(REASON_DECAP_FAILED);
		return TC_ACT_SHOT;
	}
	eth = (void *)(long)skb->data;
	if ((void *)(eth + 1) > (void *)(long)skb->data_end) {
		count_reason(REASON_DECAP_FAILED);
		return TC_ACT_SHOT;
	}
	eth_write_macs(eth, ep->mac, ep->peer_mac); /* as in xdp_decap */
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
	struct tunnel *t;
	struct ethhdr *eth;
	struct iphdr *ip;
	__u32 segs, hlen, mtu, pmtu, len;
	__u16 inner_len;
	__u8 tos, ttl;
	__be16 df;
	int gso;
	long rc;

	t = bpf_map_lookup_elem(&tunnels, &dev);
	if (!t) {
		count_reason(REASON_NO_TUNNEL);
		return TC_ACT_SHOT;
	}
	if (skb->protocol != bpf_htons(ETH_P_IP)) {
		count_reason(REASON_UNKNOWN_INNER);
		return TC_ACT_SHOT;
	}
	if ((void *)(long)skb->data + ETH_HLEN + sizeof(*ip) > (void *)(long)skb->data_end &&
	    bpf_skb_pull_data(skb, ETH_HLEN + sizeof(*ip))) {
		count_reason(REASON_TRUNCATED);
		return TC_ACT_SHOT;
	}
	eth = (void *)(long)skb->data;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > (void *)(long)skb->data_end) {
		count_reason(REASON_TRUNCATED);
		return TC_ACT_SHOT;
	}
	tos = ip->tos;
	ttl = ip->ttl;
	inner_len = bpf_ntohs(ip->tot_len);
	df = ip->frag_off & bpf_htons(IP_DF);
	segs = skb->gso_segs ? skb->gso_segs : 1;
	gso = skb->gso_size != 0;
	hlen = encap_len(t);
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
		if (df) {
			count_reason(REASON_FRAG_NEEDED);
			if (!icmp_may_answer(skb, ip))
				return TC_ACT_SHOT;
			return send_frag_needed(skb, t, len - hlen, mtu - hlen);
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
				BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 |
					BPF_F_ADJ_ROOM_ENCAP_L4_GRE) &&
	    (skb->gso_segs > 1 || bpf_skb_adjust_room(skb, hlen, BPF_ADJ_ROOM_MAC, 0))) {
		count_reason(REASON_ENCAP_FAILED);
		return TC_ACT_SHOT;
	}
	eth = (void *)(long)skb->data;
	ip = (void *)(eth + 1);
	if ((void *)ip + sizeof(*ip) + GRE_MAX_HLEN > (void *)(long)skb->data_end) {
		count_reason(REASON_ENCAP_FAILED);
		return TC_ACT_SHOT;
	}
	encap_write(ip, t, tos, ttl, df, skb->len - ETH_HLEN,
		    (t->flags & TUNNEL_F_OSEQ) ? next_seqno(t) : 0);
	eth->h_proto = bpf_htons(ETH_P_IP);
	if (t->flags & TUNNEL_F_OCSUM) {
		__u32 off = ETH_HLEN + sizeof(*ip), glen = skb->len - off;
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
		count_tx(t->ifindex, segs, inner_len);
		return bpf_redirect(fib.ifindex, 0);
	case BPF_FIB_LKUP_RET_NO_NEIGH:
		/* No next hop given: the helper routes the outer packet itself
		 * and queues it on the neighbour until it resolves. */
		count_tx(t->ifindex, segs, inner_len);
		return bpf_redirect_neigh(fib.ifindex, NULL, 0, 0);
	case BPF_FIB_LKUP_RET_FWD_DISABLED:
		/* An endpoint that does not forward: the helper will not look up
		 * for us, so let bpf_redirect_neigh route the outer packet. */
		count_tx(t->ifindex, segs, inner_len);
		return bpf_redirect_neigh(t->wan_ifindex, NULL, 0, 0);
	default:
		count_reason(REASON_NO_OUTER_ROUTE);
		return TC_ACT_SHOT;
	}
}

/* Fast path, LAN ingress: what the stack plus encap_tc would do to a packet
 * the FIB routes into a tunnel, done here and redirected out of the WAN
 * device. Anything else, and TTL <= 1, packets over the tunnel MTU (the
 * stack sends "frag needed") and unresolved outer next hops, go to the
 * stack. */
SEC("xdp")
int fastpath_lan(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct bpf_fib_lookup fib = {};
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1), *inner;
	struct tunnel *t;
	__u32 hlen, out;
	__u16 inner_len;
	__be16 df;
	__u8 tos, ttl;
	long rc;

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5 ||
	    ip->ttl <= 1)
		return XDP_PASS;
	/* A tunnel interface has no neighbours to resolve (NOARP): NO_NEIGH
	 * still names the egress. */
	fib_forward(&fib, ip, ctx->ingress_ifindex);
	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return XDP_PASS;
	out = fib.ifindex;
	t = bpf_map_lookup_elem(&tunnels, &out);
	if (!t)
		return XDP_PASS;
	inner_len = bpf_ntohs(ip->tot_len);
	hlen = encap_len(t);
	/* Over the path MTU the stack and encap_tc answer the sender. */
	if (inner_len + hlen > pmtu_floor) {
		__u32 pmtu = path_mtu_of(t);

		if (pmtu && inner_len + hlen > pmtu)
			return XDP_PASS;
	}

	__builtin_memset(&fib, 0, sizeof(fib));
	fib_outer(&fib, t, inner_len + hlen);
	if (bpf_fib_lookup(ctx, &fib, sizeof(fib), BPF_FIB_LOOKUP_OUTPUT) != BPF_FIB_LKUP_RET_SUCCESS)
		return XDP_PASS;

	tos = ip->tos;
	ttl = ip->ttl - 1;
	df = ip->frag_off & bpf_htons(IP_DF);
	if (bpf_xdp_adjust_head(ctx, -(int)hlen))
		return XDP_PASS;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	ip = (void *)(eth + 1);
	inner = (void *)ip + hlen;
	if ((void *)(inner + 1) > data_end || (void *)ip + sizeof(*ip) + GRE_MAX_HLEN > data_end)
		return XDP_DROP; /* cannot happen: the inner header was there */
	ipv4_dec_ttl(inner);
	eth_write_macs(eth, fib.dmac, fib.smac);
	eth->h_proto = bpf_htons(ETH_P_IP);
	encap_write(ip, t, tos, ttl, df, inner_len + hlen,
		    (t->flags & TUNNEL_F_OSEQ) ? next_seqno(t) : 0);
	if (t->flags & TUNNEL_F_OCSUM) {
		__u32 glen = inner_len + hlen - sizeof(*ip);
		struct scratch *s = scratch_xdp(ctx, ETH_HLEN + sizeof(*ip), glen);
		__u16 *sum;

		data = (void *)(long)ctx->data;
		sum = data + ETH_HLEN + sizeof(*ip) + 4;
		if (!s || (void *)(sum + 1) > (void *)(long)ctx->data_end) {
			count_reason(REASON_ENCAP_FAILED);
			return XDP_DROP;
		}
		*sum = scratch_csum(s, glen);
	}
	count_tx(t->ifindex, 1, inner_len);
	return bpf_redirect(fib.ifindex, 0);
}

char _license[] SEC("license") = "GPL";
