/* A per-CPU buffer for whole messages a program must sum (ICMP, GRE with
 * a checksum): copied out of the packet, so that it does not matter what
 * part of it is linear, and summed with bpf_csum_diff. */
#pragma once

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "csum.h"
#include "maps.h"

/* v & mask, computed where clang cannot see it, so that the bounds are
 * in the value itself. Clang drops a mask it finds redundant after the
 * caller's checks, folds comparisons into a range check on a copy, or
 * spills a length before checking it; older verifiers (6.1) carry none of
 * that back to the value a helper or an index is given. */
#define masked(x, m)                                                          \
	({                                                                     \
		__u64 __x = (x);                                               \
		asm volatile("%[val] &= %[msk]" : [val] "+r"(__x) : [msk] "i"(m)); \
		(__u32)__x;                                                    \
	})

/* A length the caller has checked to be between 1 and mask + 1 (mask one
 * less than a power of two), with those bounds for the verifier. */
#define bounded(len, m) (masked((len) - 1, m) + 1)

/* The folded ones' complement checksum of the first len bytes of s (at
 * most SCRATCH_LEN - 4): 0 over a message whose checksum is right. The
 * bytes after len are zeroed to the next multiple of 4 (bpf_csum_diff
 * sums words, at most 512 bytes a call). */
static __always_inline __u16 scratch_csum(struct scratch *s, __u32 len)
{
	__u32 n = (len + 3) & ~3U;
	__s64 sum = 0;

	s->buf[masked(len, SCRATCH_LEN - 1)] = 0;
	s->buf[masked(len + 1, SCRATCH_LEN - 1)] = 0;
	s->buf[masked(len + 2, SCRATCH_LEN - 1)] = 0;

	for (int c = 0; c < SCRATCH_LEN / 512; c++) {
		__u32 off = c * 512, chunk;

		if (off >= n)
			break;
		chunk = n - off;
		if (chunk > 512)
			chunk = 512;
		sum = bpf_csum_diff(NULL, 0, (void *)(s->buf + off), bounded(chunk, 511), (__u32)sum);
		if (sum < 0)
			return 1; /* never a valid sum of a zeroed checksum field */
	}
	return csum_fold((__u32)sum);
}

/* The scratch buffer holding len bytes (1 to SCRATCH_LEN - 4) of the
 * packet from off, or NULL when they cannot be read. */
static __always_inline struct scratch *scratch_xdp(struct xdp_md *ctx, __u32 off, __u32 len)
{
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);

	if (!s || len == 0 || len > SCRATCH_LEN - 4 ||
	    bpf_xdp_load_bytes(ctx, off, s->buf, bounded(len, SCRATCH_LEN - 1)))
		return NULL;
	return s;
}

static __always_inline struct scratch *scratch_skb(struct __sk_buff *skb, __u32 off, __u32 len)
{
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);

	if (!s || len == 0 || len > SCRATCH_LEN - 4 ||
	    bpf_skb_load_bytes(skb, off, s->buf, bounded(len, SCRATCH_LEN - 1)))
		return NULL;
	return s;
}
