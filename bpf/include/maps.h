/* Map definitions. Pinned by the control plane, never by libbpf, so that
 * the pin directory can carry the network namespace's name. */
#pragma once

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "grebpf.h"

/* Two entries a tunnel: its interface and the interface's veth peer. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * MAX_TUNNELS);
	__type(key, __u32);
	__type(value, struct tunnel);
} tunnels SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_TUNNELS);
	__type(key, struct endpoint_key);
	__type(value, struct endpoint);
} endpoints SEC(".maps");

/* The (local, remote, key sent) of each tunnel, valued with its interface:
 * what an ICMP quoting one of our outer packets is matched against. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_TUNNELS);
	__type(key, struct endpoint_key);
	__type(value, __u32);
} senders SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_TUNNELS);
	__type(key, struct peer_key);
	__type(value, __u32);
} peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, MAX_TUNNELS);
	__type(key, __u32);
	__type(value, struct tunnel_counters);
} tunnel_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_TUNNELS);
	__type(key, __u32);
	__type(value, struct seqno);
} seqnos SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, REASON_MAX);
	__type(key, enum reason);
	__type(value, __u64);
} reason_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct attachment);
} attachments SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_TUNNELS);
	__type(key, struct peer_key);
	__type(value, struct path_mtu);
} path_mtus SEC(".maps");

/* The IPv4 address ICMP errors leave from, per device: the first primary
 * address, as the kernel's source selection picks it for a connected
 * route. Filled by the control plane; tunnel interfaces are not in it (a
 * tunnel's overlay address is in tunnels). */
#define MAX_IFACE_ADDRS 4096

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_IFACE_ADDRS);
	__type(key, __u32);
	__type(value, __be32);
} iface_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");
