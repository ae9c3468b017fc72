//go:build ignore

/* Programs for grebpf bench: a traffic generator run through
 * BPF_PROG_TEST_RUN live frames (UDP over IPv4 or IPv6), a sink that
 * counts and drops it, and plain IPv4 and IPv6 forwarding in XDP (the
 * ceiling grebpf's fast path is measured against, and the WAN router)
 * and at TC ingress (the WAN router where the endpoints send skbs).
 * And for go test -bench: replay_xdp and replay_tc, which let one
 * BPF_PROG_TEST_RUN with a large repeat time a program on the same packet
 * over and over with warm caches, as a busy device runs it. */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "csum.h"
#include "fib.h"
#include "ipv6.h"

#define FRAME_LEN 64

/* Set by the loader before load. */
const volatile __u16 bench_port = 9;  /* UDP destination of generated traffic */
const volatile __u16 bench_flows = 1; /* distinct UDP source ports */
/* The generated frame. Live-frame pages come back from the devices they
 * were redirected to with those hops' rewrites (MACs, TTL) in them, so the
 * generator writes the whole frame every time. Written by the loader per
 * lab, so not const. */
volatile __u8 frame_template[FRAME_LEN];

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} sink_packets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} gen_seq SEC(".maps");

/* The generated datagram's UDP header, over IPv4 or IPv6. */
static __always_inline struct udphdr *bench_udp(void *data, void *data_end)
{
	struct ethhdr *eth = data;
	struct udphdr *udp;

	if ((void *)(eth + 1) > data_end)
		return NULL;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		udp = (void *)(ip + 1);
		if ((void *)(udp + 1) > data_end || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
			return NULL;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		udp = (void *)(ip6 + 1);
		if ((void *)(udp + 1) > data_end || ip6->nexthdr != IPPROTO_UDP)
			return NULL;
	} else {
		return NULL;
	}
	return udp->dest == bpf_htons(bench_port) ? udp : NULL;
}

/* Run with BPF_F_TEST_XDP_LIVE_FRAMES on a 64-byte frame: writes
 * frame_template with the next source port, so the traffic is bench_flows
 * flows, and transmits it out of the device the run names. */
SEC("xdp")
int gen_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct udphdr *udp;
	__u32 zero = 0, check;
	__u64 *seq = bpf_map_lookup_elem(&gen_seq, &zero);
	__u16 port;

	if (data + FRAME_LEN > data_end || !seq)
		return XDP_DROP;
	__builtin_memcpy(data, (const void *)frame_template, FRAME_LEN);
	udp = bench_udp(data, data_end);
	if (!udp)
		return XDP_DROP;
	*seq += 1;
	port = 1024 + (__u16)(*seq % bench_flows);
	/* The template's checksum is for port 1024 (RFC 1624), which IPv6
	 * requires to be right. */
	check = (__u16)~bpf_ntohs(udp->check) + (__u16)~1024 + port;
	check = (check & 0xffff) + (check >> 16);
	check = (check & 0xffff) + (check >> 16);
	udp->source = bpf_htons(port);
	udp->check = bpf_htons(~check & 0xffff);
	return XDP_TX;
}

/* On the receiving host: counts generated packets and drops them. */
SEC("xdp")
int sink_xdp(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u64 *n;

	if (!bench_udp((void *)(long)ctx->data, (void *)(long)ctx->data_end))
		return XDP_PASS;
	n = bpf_map_lookup_elem(&sink_packets, &zero);
	if (n)
		*n += 1;
	return XDP_DROP;
}

/* Plain IPv4 and IPv6 forwarding, as xdp-forward does it, of the frame at
 * data that came in on ifindex: the redirect's verdict, or -1 where the
 * stack must forward it. */
static __always_inline long forward(void *ctx, void *data, void *data_end, __u32 ifindex)
{
	struct bpf_fib_lookup fib = {};
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return -1;
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end || ip6->hop_limit <= 1 || !ipv6_forwardable(ip6))
			return -1;
		fib_forward6(&fib, ip6, ifindex);
		if (bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
			return -1;
		return xdp_forward6(eth, ip6, &fib);
	}

	struct iphdr *ip = (void *)(eth + 1);

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->ttl <= 1)
		return -1;
	fib_forward(&fib, ip, ifindex);
	if (bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
		return -1;
	return xdp_forward(eth, ip, &fib);
}

SEC("xdp")
int fwd_xdp(struct xdp_md *ctx)
{
	long v = forward(ctx, (void *)(long)ctx->data, (void *)(long)ctx->data_end, ctx->ingress_ifindex);

	return v < 0 ? XDP_PASS : v;
}

/* The same at TC ingress, for a router that skbs cross: XDP on a veth
 * first copies every skb with less than XDP_PACKET_HEADROOM (256 bytes)
 * in front of its data into a new page, and an encapsulated packet has
 * less. A GSO packet is over the MTU for the lookup: the stack takes it. */
SEC("tc")
int fwd_tc(struct __sk_buff *skb)
{
	long v = forward(skb, (void *)(long)skb->data, (void *)(long)skb->data_end, skb->ifindex);

	return v < 0 ? TC_ACT_OK : v;
}

/* The packet replayed, set after load. Test runs with repeat keep the
 * packet between runs, and a decap or encap changes its length and bytes,
 * so every run first puts the original back, then tail-calls the program
 * measured. A no-op target gives the cost of the replay itself. */
#define REPLAY_MAX 256
volatile __u8 replay_frame[REPLAY_MAX];
volatile __u32 replay_len;

/* One per program type: a program array holds programs of one type. */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} replay_xdp_target SEC(".maps"), replay_tc_target SEC(".maps");

/* Verdicts no program under test returns: the replay itself failed. */
#define REPLAY_FAILED_XDP 0xfe
#define REPLAY_FAILED_TC 0xfe

/* The replayed length, 1..REPLAY_MAX, in a form the verifier of 6.1 can
 * bound: it does not carry a check on one register over to a copy that
 * clang derives from the same load. */
static __always_inline int replay_length(__u64 *len)
{
	__u64 n = (__u64)replay_len - 1;

	if (n >= REPLAY_MAX)
		return -1;
	asm volatile("" : "+r"(n));
	*len = n + 1;
	return 0;
}

SEC("xdp")
int replay_xdp(struct xdp_md *ctx)
{
	int cur = ctx->data_end - ctx->data;
	int meta = ctx->data - ctx->data_meta;
	__u64 len;

	if (replay_length(&len))
		return REPLAY_FAILED_XDP;
	/* Metadata the previous run left (decap's tunnel ifindex) goes, or
	 * each run would find less room for its own. */
	if (meta && bpf_xdp_adjust_meta(ctx, meta))
		return REPLAY_FAILED_XDP;
	if (cur != (int)len && bpf_xdp_adjust_head(ctx, cur - (int)len))
		return REPLAY_FAILED_XDP;
	if (bpf_xdp_store_bytes(ctx, 0, (void *)replay_frame, len))
		return REPLAY_FAILED_XDP;
	bpf_tail_call(ctx, &replay_xdp_target, 0);
	return REPLAY_FAILED_XDP;
}

SEC("tc")
int replay_tc(struct __sk_buff *skb)
{
	int cur = skb->len;
	__u64 len;

	if (replay_length(&len))
		return REPLAY_FAILED_TC;
	if (cur != (int)len && bpf_skb_adjust_room(skb, (int)len - cur, BPF_ADJ_ROOM_MAC, 0))
		return REPLAY_FAILED_TC;
	if (bpf_skb_store_bytes(skb, 0, (void *)replay_frame, len, 0))
		return REPLAY_FAILED_TC;
	bpf_tail_call(skb, &replay_tc_target, 0);
	return REPLAY_FAILED_TC;
}

char _license[] SEC("license") = "GPL";
