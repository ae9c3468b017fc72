/* Ethernet header rewriting. */
#pragma once

#include <linux/if_ether.h>
#include <linux/types.h>

/* Writes both MACs in 16-bit words: memcpy into a packet of unknown
 * alignment is byte by byte, and the MACs we copy from (a FIB lookup on
 * the stack, an endpoint in a map) are only 2-byte aligned. */
static __always_inline void eth_write_macs(struct ethhdr *eth, const __u8 *dst, const __u8 *src)
{
	const __u16 *d = (const __u16 *)dst, *s = (const __u16 *)src;
	__u16 *to = (__u16 *)eth;

	to[0] = d[0], to[1] = d[1], to[2] = d[2];
	to[3] = s[0], to[4] = s[1], to[5] = s[2];
}
