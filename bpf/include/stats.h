/* Counter updates. Per-CPU maps, so plain adds are race free. */
#pragma once

#include "maps.h"

static __always_inline void count_reason(enum reason r)
{
	__u64 *n = bpf_map_lookup_elem(&reason_stats, &r);

	if (n)
		*n += 1;
}

static __always_inline void count_rx(__u32 tunnel_id, __u64 packets, __u64 bytes)
{
	struct tunnel_counters *s = bpf_map_lookup_elem(&tunnel_stats, &tunnel_id);

	if (s) {
		s->rx_packets += packets;
		s->rx_bytes += bytes;
	}
}

static __always_inline void count_tx(__u32 tunnel_id, __u64 packets, __u64 bytes)
{
	struct tunnel_counters *s = bpf_map_lookup_elem(&tunnel_stats, &tunnel_id);

	if (s) {
		s->tx_packets += packets;
		s->tx_bytes += bytes;
	}
}
