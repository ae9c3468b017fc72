/* IPv4 header checksum helpers. */
#pragma once

#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* TTL - 1 with the header checksum updated incrementally (RFC 1624), as
 * the kernel's ip_decrease_ttl does. */
static __always_inline void ipv4_dec_ttl(struct iphdr *ip)
{
	__u32 check = ip->check;

	check += bpf_htons(0x0100);
	ip->check = (__u16)(check + (check >= 0xffff));
	ip->ttl--;
}

/* Checksum of an option-less header; the caller has bounds-checked it.
 * Over a received header it is 0 when the header is intact. Five 32-bit
 * words summed in 64 bits: half the loads of 16-bit words, and the ones'
 * complement sum comes out the same once folded. */
static __always_inline __u16 ipv4_csum(struct iphdr *ip)
{
	__u32 *w = (__u32 *)ip;
	__u64 sum = (__u64)w[0] + w[1] + w[2] + w[3] + w[4];

	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	return csum_fold((__u32)sum);
}

/* True when a received header of ihl words (options included) sums right.
 * Each word is bounds-checked on its own; the empty asm keeps clang from
 * merging those checks into one the verifier cannot follow. */
static __always_inline int ipv4_csum_ok(struct iphdr *ip, void *data_end)
{
	__u32 words = ip->ihl * 2;
	__u32 sum = 0;

	if (ip->ihl == 5) /* the common case, already bounds-checked */
		return ipv4_csum(ip) == 0;

	for (int i = 0; i < 30; i++) {
		__u16 *w = (__u16 *)ip + i;

		if (i >= words)
			break;
		asm volatile("" : "+r"(w));
		if ((void *)(w + 1) > data_end)
			return 0;
		sum += *w;
	}
	return csum_fold(sum) == 0;
}

/* The ECN field of a received inner header rewritten as the kernel's
 * IP_ECN_set_ce and IP_ECN_set_ect1 do it, checksum updated the same
 * way, so the bytes delivered match ip_gre's. */
static __always_inline void ipv4_set_ce(struct iphdr *ip)
{
	__u32 check = ip->check;
	__u32 ecn = (ip->tos + 1) & 3; /* ECT(1) 2, ECT(0) 3; CE and not-ECT untouched */

	if (!(ecn & 2))
		return;
	check += (__u16)bpf_htons(0xfffb) + (__u16)bpf_htons(ecn);
	ip->check = (__u16)(check + (check >= 0xffff));
	ip->tos |= 3;
}

static __always_inline void ipv4_set_ect1(struct iphdr *ip)
{
	__u32 check = ip->check;

	if ((ip->tos & 3) != 2)
		return;
	check += (__u16)bpf_htons(0x1);
	ip->check = (__u16)(check + (check >= 0xffff));
	ip->tos ^= 3;
}
