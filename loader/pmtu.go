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
// ip_gre follows through the kernel's routes: the floor a learned path MTU
// never goes below, how long one holds, and the TTL of the ICMP errors
// the programs send.
func setSysctls(spec *ebpf.CollectionSpec) error {
	for _, v := range []struct {
		sysctl, variable string
		set              func(int) any
	}{
		{"net/ipv4/route/min_pmtu", "pmtu_floor", func(n int) any { return uint32(n) }},
		{"net/ipv4/route/mtu_expires", "pmtu_expires_ns", func(n int) any { return uint64(time.Duration(n) * time.Second) }},
		{"net/ipv4/ip_default_ttl", "icmp_ttl", func(n int) any { return uint8(n) }},
	} {
		b, err := os.ReadFile("/proc/sys/" + v.sysctl)
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
// inet_select_addr picks for a connected route. Devices gone since the
// last attach are forgotten; tunnel interfaces answer from their overlay
// address, which the tunnels map holds.
func fillICMPSources(m *bpf.GrebpfMaps) error {
	addrs, err := netlink.AddrList(nil, unix.AF_INET)
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	own, err := routing.OwnInterfaces()
	if err != nil {
		return err
	}
	srcs := map[uint32]netip.Addr{}
	for _, a := range addrs {
		idx := uint32(a.LinkIndex)
		if _, ok := srcs[idx]; ok || slices.Contains(own, a.LinkIndex) || a.Scope == unix.RT_SCOPE_HOST || a.Flags&unix.IFA_F_SECONDARY != 0 {
			continue
		}
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok {
			srcs[idx] = ip
		}
	}
	return maps.SetICMPSources(m, srcs)
}
