/* Wire format and map layouts shared by every grebpf program and, through
 * bpf2go -type, by the Go control plane. Changing a layout here changes the
 * pinned maps: bump nothing silently, the loader refuses incompatible pins. */
#pragma once

#include <linux/types.h>

#define MAX_TUNNELS 16384
#define TUNNEL_NAME_LEN 16

/* GRE header bits (RFC 2784 / RFC 2890), host order of the first 16 bits. */
#define GRE_CSUM 0x8000
#define GRE_ROUTING 0x4000
#define GRE_KEY 0x2000
#define GRE_SEQ 0x1000
#define GRE_VERSION 0x0007

#define GRE_HLEN 4
#define GRE_KEY_HLEN 8
#define GRE_MAX_HLEN 16 /* with checksum, key and sequence number */

enum tunnel_flag {
	TUNNEL_F_KEY = 1 << 0,         /* send the GRE key (ip_gre's okey) */
	TUNNEL_F_TOS_INHERIT = 1 << 1, /* outer DSCP from the inner header */
	/* Outer DF copies the inner packet's instead of always being set
	 * (ip_gre's nopmtudisc). */
	TUNNEL_F_NOPMTUDISC = 1 << 2,
	/* Send sequence numbers (ip_gre's oseq), 0 up, per tunnel. */
	TUNNEL_F_OSEQ = 1 << 3,
	/* Send GRE checksums (ip_gre's ocsum). */
	TUNNEL_F_OCSUM = 1 << 4,
};

/* Inner source check on decap (rp_filter semantics, against the FIB).
 * Numbering is ABI, mirrored by the control plane's RPFilter. */
enum rp_filter {
	RP_STRICT = 0, /* the route back to the source leaves through this tunnel */
	RP_LOOSE = 1,  /* some unicast route back to the source exists */
	RP_OFF = 2,
};

/* A tunnel is an interface: a veth pair whose first end (ifindex, "gre1")
 * holds the overlay address and carries the routes, and whose second end
 * (rx_ifindex, "gre1p") is where encap sees what the kernel routed into the
 * tunnel and where decap hands packets back. A tunnel is known by its
 * interface's ifindex: it names the tunnel in every map. */

/* tunnels map value, keyed by the ifindex of each device whose packets are
 * the tunnel's inner traffic (the interface and its veth peer). The fields
 * after wan_ifindex are read only by the control plane. */
struct tunnel {
	__be32 local;  /* outer source */
	__be32 remote; /* outer destination */
	__be32 key;    /* GRE key sent, network order, when TUNNEL_F_KEY */
	__u32 flags;
	__u8 ttl; /* 0 inherits the inner TTL, as ip_gre does */
	__u8 tos; /* fixed outer DSCP when not TUNNEL_F_TOS_INHERIT */
	__u8 rp_filter;
	__u8 pad;
	__u32 ifindex;     /* the tunnel interface: counters are kept under it */
	__u32 wan_ifindex; /* outer packets leave here, never through a tunnel */
	__u32 rx_ifindex;
	__be32 overlay_local;
	__be32 overlay_remote;
	__be32 wan_nexthop; /* outer next hop kept resolved (managed neighbour) */
	char name[TUNNEL_NAME_LEN];
};

/* endpoints map key: what decap accepts, the outer addresses as they
 * appear in a received packet (our address first) and the GRE key it
 * carries (ip_gre's ikey; keyed 0: none). Several tunnels between the
 * same endpoints are told apart by key. The senders map has the same
 * key with the key a tunnel sends (okey). */
struct endpoint_key {
	__be32 local;
	__be32 remote;
	__be32 key;
	__u32 keyed;
};

/* peers map key: an outer path with one tunnel or more (the value counts
 * them), our address first; also the key of path_mtus. */
struct peer_key {
	__be32 local;
	__be32 remote;
};

/* Everything decap needs, so that it makes one map lookup. */
struct endpoint {
	__u32 ifindex;    /* the tunnel interface */
	__u32 rx_ifindex; /* its veth peer: decap transmits there */
	__u8 mac[6];      /* the interface's MAC: decapsulated frames go to it */
	__u8 peer_mac[6]; /* and come from its peer's */
	__u8 rp_filter;
	__u8 iseq;  /* drop packets without a sequence number or out of order (ip_gre's iseq) */
	__u8 icsum; /* take only packets with a GRE checksum, and check it (ip_gre's icsum) */
	__u8 pad;
};

/* seqnos map value, keyed by the tunnel's ifindex: ip_gre's o_seqno (the
 * next number to send) and i_seqno (the next number expected, 0 before
 * the first). */
struct seqno {
	__u32 o_seqno;
	__u32 i_seqno;
};

/* tunnel_stats map value, per CPU, keyed by the tunnel's ifindex. Bytes are inner
 * IPv4 bytes, as an ip_gre netdev counts them. */
struct tunnel_counters {
	__u64 rx_packets;
	__u64 rx_bytes;
	__u64 tx_packets;
	__u64 tx_bytes;
};

/* Why a packet was not encapsulated or decapsulated. reason_stats counts
 * each, per CPU. The numbering is ABI: append only. */
enum reason {
	REASON_NONE = 0,
	REASON_NOT_GRE,        /* pass: not IPv4 protocol 47 */
	REASON_TRUNCATED,      /* drop: a header is shorter than it claims */
	REASON_OUTER_CHECKSUM, /* drop: outer IPv4 header checksum is wrong */
	REASON_OUTER_FRAGMENT, /* drop: outer fragment from a peer (nothing reassembles them) */
	REASON_UNKNOWN_PEER,   /* pass: no endpoint for this (dst, src) */
	REASON_BAD_VERSION,    /* drop: GRE version is not 0 */
	REASON_ROUTING,        /* drop: GRE routing bit set */
	REASON_CSUM_FLAG,      /* drop: GRE checksum on a tunnel without icsum, or none on one with it */
	REASON_SEQ_ORDER,      /* drop: sequence number missing or out of order on an iseq tunnel */
	REASON_KEY_MISMATCH,   /* drop: key missing, unexpected or wrong */
	REASON_UNKNOWN_INNER,  /* drop: inner protocol is not IPv4 */
	REASON_DECAP_FAILED,   /* drop: the kernel refused to strip headers */
	REASON_NO_TUNNEL,      /* drop: a tunnel device with no tunnel configured */
	REASON_ENCAP_FAILED,   /* drop: the kernel refused to grow headroom */
	REASON_NO_OUTER_ROUTE, /* drop: no route to the tunnel's remote */
	REASON_OUTER_TOO_BIG,  /* drop: encapsulated packet exceeds the WAN MTU */
	REASON_INNER_SOURCE,   /* drop: inner source not routed back through its tunnel */
	REASON_ECN_NOT_ECT,    /* drop: outer CE over an inner packet that is not ECN-capable (RFC 6040) */
	REASON_OUTER_OPTIONS,  /* drop: malformed outer IPv4 options */
	REASON_SOURCE_ROUTE,   /* drop: outer source route on a WAN device that refuses them */
	REASON_SOURCE_ROUTED,  /* pass: outer source route with hops left: the stack forwards it */
	REASON_PATH_MTU,       /* pass: ICMP "fragmentation needed" about a tunnel's outer packet: path MTU noted */
	REASON_FRAG_NEEDED,    /* drop: inner packet with DF over the tunnel's path MTU: ICMP sent to its sender */
	REASON_GRE_CHECKSUM,   /* drop: GRE checksum wrong (or the packet too long to sum) */
	REASON_MAX,
};

/* path_mtus map value, keyed by the path's peer_key (local, remote):
 * what ICMP "fragmentation needed" said about the path to the remote. */
struct path_mtu {
	__u32 mtu;
	__u32 pad;
	__u64 expires; /* bpf_ktime_get_ns (CLOCK_MONOTONIC) */
};

/* Room for an ICMP message a program checks or builds; a power of two. */
#define SCRATCH_LEN 2048

struct scratch {
	__u8 buf[SCRATCH_LEN];
};

enum decap_attach {
	DECAP_XDP = 1,
	DECAP_TC = 2,
};

enum tc_attach {
	TC_TCX = 1,
	TC_CLSACT = 2,
};

enum attachment_flag {
	ATTACH_F_XDP_GENERIC = 1 << 0,
	ATTACH_F_CLSACT_OWNED = 1 << 1, /* control plane added the clsact qdisc */
	ATTACH_F_GRO_OWNED = 1 << 2,    /* control plane turned GRO on */
	ATTACH_F_FASTPATH = 1 << 3,     /* WAN runs fastpath_wan, LANs fastpath_lan */
	ATTACH_F_ENCAP_EGRESS = 1 << 4, /* encap on the tunnel interfaces' egress */
	/* The WAN device accepts source-routed packets (accept_source_route
	 * on for it and for all), as the kernel's ip_rcv_options asks. */
	ATTACH_F_ACCEPT_SOURCE_ROUTE = 1 << 5,
};

/* attachments map: one entry saying where and how the programs are attached,
 * so that show and detach work from the pins alone. */
struct attachment {
	__u32 ifindex;
	enum decap_attach decap;
	enum tc_attach tc;
	__u32 flags;
};
