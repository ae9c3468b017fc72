// Package routing sets what the kernel must know for a BPF tunnel with no
// tunnel netdev: the local overlay address, a permanent neighbour for the
// peer's overlay address (so no ARP is ever sent for it), and routes into
// the tunnel with src = local overlay and mtu = WAN MTU − GRE overhead, so
// that ICMP errors and "frag needed" read exactly as with ip_gre.
package routing

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/grebpf/grebpf/maps"
)

// Proto marks the routes grebpf installs (`ip route show proto 177`), so
// detach takes out exactly those.
const Proto netlink.RouteProtocol = 177

// peerMAC is the link-layer address of the peer's overlay neighbour. Nothing
// ever reaches the wire with it: the encap program rewrites the MAC header
// for the outer next hop.
var peerMAC = net.HardwareAddr{0x02, 0x00, 'g', 'r', 'e', 0x00}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
}

func host(a netip.Addr) *net.IPNet { return ipNet(netip.PrefixFrom(a, 32)) }

// Check refuses, before anything changes, a configuration the kernel side
// cannot take: a local endpoint that is not ours, an overlay address used
// elsewhere, a prefix that overlaps a route grebpf does not own.
func Check(link netlink.Link, tunnels []maps.Tunnel, routes []maps.Route) error {
	addrs, err := netlink.AddrList(nil, unix.AF_INET)
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	where := map[netip.Addr]int{}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok {
			where[ip] = a.LinkIndex
		}
	}
	for _, t := range tunnels {
		if _, ok := where[t.Local]; !ok {
			return fmt.Errorf("tunnel %s: local %s is not an address of this namespace: use the WAN device's own address", t.Name, t.Local)
		}
		if idx, ok := where[t.OverlayLocal]; ok && idx != link.Attrs().Index {
			return fmt.Errorf("tunnel %s: overlay %s is already assigned to another device (ifindex %d): remove it or pick another overlay address", t.Name, t.OverlayLocal, idx)
		}
	}
	kernel, err := netlink.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	for _, kr := range kernel {
		if kr.Protocol == Proto || kr.Dst == nil {
			continue // ours, or a default route: tunnel routes are more specific by design
		}
		kp, ok := netip.AddrFromSlice(kr.Dst.IP.To4())
		if !ok {
			continue
		}
		ones, _ := kr.Dst.Mask.Size()
		kpfx := netip.PrefixFrom(kp, ones)
		if kpfx.Bits() == 0 {
			continue
		}
		for _, r := range routes {
			if r.Prefix.Overlaps(kpfx) {
				dev := fmt.Sprintf("ifindex %d", kr.LinkIndex)
				if l, err := netlink.LinkByIndex(kr.LinkIndex); err == nil {
					dev = l.Attrs().Name
				}
				return fmt.Errorf("route %s overlaps the kernel route %s dev %s: remove that route or choose another prefix", r.Prefix, kpfx, dev)
			}
		}
	}
	return nil
}

// Apply installs the kernel side of tunnels and routes on link and removes
// grebpf routes that are no longer wanted. It is idempotent. It reports
// which overlay addresses it added (existing ones it leaves to their owner).
func Apply(link netlink.Link, tunnels []maps.Tunnel, routes []maps.Route) (added map[uint32]bool, err error) {
	idx := link.Attrs().Index
	added = map[uint32]bool{}
	byID := map[uint32]maps.Tunnel{}
	for _, t := range tunnels {
		byID[t.ID] = t
		addr := &netlink.Addr{IPNet: host(t.OverlayLocal)}
		if err := netlink.AddrAdd(link, addr); err == nil {
			added[t.ID] = true
		} else if !errors.Is(err, unix.EEXIST) {
			return added, fmt.Errorf("add overlay address %s: %w", t.OverlayLocal, err)
		}
		if err := netlink.NeighSet(&netlink.Neigh{
			LinkIndex: idx, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
			IP: t.OverlayRemote.AsSlice(), HardwareAddr: peerMAC,
		}); err != nil {
			return added, fmt.Errorf("add neighbour %s: %w", t.OverlayRemote, err)
		}
	}
	want := map[netip.Prefix]bool{}
	for _, r := range routes {
		t := byID[r.TunnelID]
		rt := &netlink.Route{
			LinkIndex: idx, Dst: ipNet(r.Prefix), Src: t.OverlayLocal.AsSlice(),
			Protocol: Proto, MTU: int(t.MTU), Table: unix.RT_TABLE_MAIN,
		}
		if r.Prefix == netip.PrefixFrom(t.OverlayRemote, 32) {
			rt.Scope = netlink.SCOPE_LINK
		} else {
			rt.Gw = t.OverlayRemote.AsSlice()
			rt.Flags = int(netlink.FLAG_ONLINK)
		}
		if err := netlink.RouteReplace(rt); err != nil {
			return added, fmt.Errorf("add route %s: %w", r.Prefix, err)
		}
		want[r.Prefix] = true
	}
	return added, removeRoutes(idx, want)
}

// Ours lists the routes grebpf installed on the device.
func Ours(ifindex int) ([]netlink.Route, error) {
	rs, err := netlink.RouteListFiltered(unix.AF_INET,
		&netlink.Route{LinkIndex: ifindex, Protocol: Proto, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list grebpf routes: %w", err)
	}
	return rs, nil
}

func removeRoutes(ifindex int, keep map[netip.Prefix]bool) error {
	rs, err := Ours(ifindex)
	if err != nil {
		return err
	}
	for _, r := range rs {
		if r.Dst != nil {
			a, _ := netip.AddrFromSlice(r.Dst.IP.To4())
			ones, _ := r.Dst.Mask.Size()
			if keep[netip.PrefixFrom(a, ones)] {
				continue
			}
		}
		if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("delete route %s: %w", r.Dst, err)
		}
	}
	return nil
}

// Remove takes out the kernel side of tunnels: their routes, neighbours and
// the overlay addresses attach added. With all set, every grebpf route on
// the device goes too. Missing pieces are not errors: detach must be able
// to finish a half-done attach.
func Remove(ifindex int, tunnels []maps.Tunnel, all bool) error {
	var errs []error
	if all {
		errs = append(errs, removeRoutes(ifindex, nil))
	} else {
		rs, err := Ours(ifindex)
		errs = append(errs, err)
		gone := map[string]bool{}
		for _, t := range tunnels {
			gone[t.OverlayRemote.String()] = true
		}
		for _, r := range rs {
			peer := r.Gw
			if peer == nil && r.Dst != nil {
				peer = r.Dst.IP
			}
			if peer != nil && gone[peer.String()] {
				if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
					errs = append(errs, fmt.Errorf("delete route %s: %w", r.Dst, err))
				}
			}
		}
	}
	for _, t := range tunnels {
		n := &netlink.Neigh{LinkIndex: ifindex, Family: unix.AF_INET, IP: t.OverlayRemote.AsSlice()}
		if err := netlink.NeighDel(n); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete neighbour %s: %w", t.OverlayRemote, err))
		}
		if t.AddrOwned {
			link, err := netlink.LinkByIndex(ifindex)
			if err == nil {
				err = netlink.AddrDel(link, &netlink.Addr{IPNet: host(t.OverlayLocal)})
			}
			if err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				errs = append(errs, fmt.Errorf("delete overlay address %s: %w", t.OverlayLocal, err))
			}
		}
	}
	return errors.Join(errs...)
}
