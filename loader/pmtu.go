package loader

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/grebpf/grebpf/bpf"
	"github.com/grebpf/grebpf/internal/routing"
	"github.com/grebpf/grebpf/maps"
)

// setSysctls gives the programs the namespace's path MTU rules, which
// ip_gre and ip6gre follow through the kernel's routes: the floor a
// learned IPv4 path MTU never goes below (IPv6's is its minimum MTU), how
// long one holds, and the TTL and hop limit of the
// ICMP and ICMPv6 errors the programs send (the devices' hop limit is the
// namespace's unless someone set one apart).
func setSysctls(spec *ebpf.CollectionSpec) error {
	for _, v := range []struct {
		sysctl, variable string
		set              func(int) any
	}{
		{"net/ipv4/route/min_pmtu", "pmtu_floor", func(n int) any { return uint32(n) }},
		{"net/ipv4/route/mtu_expires", "pmtu_expires_ns", func(n int) any { return uint64(time.Duration(n) * time.Second) }},
		{"net/ipv6/route/mtu_expires", "pmtu6_expires_ns", func(n int) any { return uint64(time.Duration(n) * time.Second) }},
		{"net/ipv4/ip_default_ttl", "icmp_ttl", func(n int) any { return uint8(n) }},
		{"net/ipv6/conf/all/hop_limit", "icmp6_hop_limit", func(n int) any { return uint8(n) }},
	} {
		b, err := os.ReadFile("/proc/sys/" + v.sysctl)
		if os.IsNotExist(err) && strings.HasPrefix(v.sysctl, "net/ipv6/") {
			continue // a kernel without IPv6 sends no ICMPv6
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", strings.ReplaceAll(v.sysctl, "/", "."), err)
		}
		n, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return fmt.Errorf("read %s: %w", strings.ReplaceAll(v.sysctl, "/", "."), err)
		}
		if err := spec.Variables[v.variable].Set(v.set(n)); err != nil {
			return fmt.Errorf("set %s: %w", v.variable, err)
		}
	}
	return nil
}

// fillICMPSources writes, for every device of the namespace with an IPv4
// address, the address ICMP errors routed out of it leave from: its first
// primary address that is not host-scoped, as the kernel's
// inet_select_addr picks for a connected route; tunnel interfaces answer
// from their overlay address, which the tunnels map holds. For IPv6, every
// device's first global address (unique-local included), tunnel
// interfaces too, as source selection prefers an address of the outgoing
// device with the scope of a global destination, and every address that
// is not link-local, to tell senders on this host. Devices and addresses
// gone since the last attach are forgotten.
func fillICMPSources(m *bpf.GrebpfMaps) error {
	addrs, err := routing.Dump(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	own, err := routing.OwnInterfaces()
	if err != nil {
		return err
	}
	srcs := maps.ICMPSources{V4: map[uint32]netip.Addr{}, V6: map[uint32]netip.Addr{}}
	for _, a := range addrs {
		idx := uint32(a.LinkIndex)
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		if ip = ip.Unmap(); ip.Is4() {
			if _, ok := srcs.V4[idx]; ok || slices.Contains(own, a.LinkIndex) || a.Scope == unix.RT_SCOPE_HOST || a.Flags&unix.IFA_F_SECONDARY != 0 {
				continue
			}
			srcs.V4[idx] = ip
			continue
		}
		if ip.IsLinkLocalUnicast() {
			continue
		}
		srcs.Local6 = append(srcs.Local6, ip)
		if _, ok := srcs.V6[idx]; !ok && a.Scope == unix.RT_SCOPE_UNIVERSE && a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DEPRECATED|unix.IFA_F_DADFAILED) == 0 {
			srcs.V6[idx] = ip
		}
	}
	return maps.SetICMPSources(m, srcs)
}
