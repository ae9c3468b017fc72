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
	"slices"

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
// elsewhere, a prefix that overlaps a route grebpf does not own. Addresses
// and routes on the devices in own (grebpf's ip_gre netdevs) are grebpf's.
func Check(link netlink.Link, tunnels []maps.Tunnel, routes []maps.Route, own ...int) error {
	addrs, err := netlink.AddrList(nil, unix.AF_INET)
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	where := map[netip.Addr]int{}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok && !slices.Contains(own, a.LinkIndex) {
			where[ip] = a.LinkIndex
		}
	}
	for _, t := range tunnels {
		if _, err := wanNexthop(link, t); err != nil {
			return err
		}
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
		if kr.Protocol == Proto || kr.Dst == nil || slices.Contains(own, kr.LinkIndex) {
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

// wanNexthop is the outer next hop towards t's remote, which must be
// reached through link: encap looks the route up with link as output.
func wanNexthop(link netlink.Link, t maps.Tunnel) (netip.Addr, error) {
	rs, err := netlink.RouteGet(t.Remote.AsSlice())
	if err != nil || len(rs) == 0 {
		return netip.Addr{}, fmt.Errorf("tunnel %s: no route to remote %s: add one through %s", t.Name, t.Remote, link.Attrs().Name)
	}
	if rs[0].LinkIndex != link.Attrs().Index {
		return netip.Addr{}, fmt.Errorf("tunnel %s: remote %s is routed through ifindex %d, not %s: attach to the device that reaches it", t.Name, t.Remote, rs[0].LinkIndex, link.Attrs().Name)
	}
	if gw, ok := netip.AddrFromSlice(rs[0].Gw.To4()); ok {
		return gw, nil
	}
	return t.Remote, nil
}

// Apply installs the kernel side of tunnels and routes on link and removes
// grebpf routes that are no longer wanted. It is idempotent. It returns the
// tunnels with AddrOwned set where it added the overlay address (an
// existing one it leaves to its owner) and WANNexthop filled in.
//
// The outer next hop gets a managed neighbour entry, which the kernel keeps
// resolved: encap then always finds its MAC. Without it the first packets
// would wait in the neighbour queue, and the queue sends them with the
// inner route's neighbour (the peer overlay's placeholder MAC) because the
// skb still carries the inner route.
func Apply(link netlink.Link, tunnels []maps.Tunnel, routes []maps.Route) ([]maps.Tunnel, error) {
	idx := link.Attrs().Index
	byID := map[uint32]maps.Tunnel{}
	out := make([]maps.Tunnel, 0, len(tunnels))
	// One netlink socket for the lot: the package-level calls open one per
	// request, which is most of the cost at 10,000 tunnels and 100,000 routes.
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return out, fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	managed, err := managedNeighbours(h, idx)
	if err != nil {
		return out, err
	}
	for _, t := range tunnels {
		addr := &netlink.Addr{IPNet: host(t.OverlayLocal)}
		if err := h.AddrAdd(link, addr); err == nil {
			t.AddrOwned = true
		} else if !errors.Is(err, unix.EEXIST) {
			return out, fmt.Errorf("add overlay address %s: %w", t.OverlayLocal, err)
		}
		if err := h.NeighSet(&netlink.Neigh{
			LinkIndex: idx, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
			IP: t.OverlayRemote.AsSlice(), HardwareAddr: peerMAC,
		}); err != nil {
			return out, fmt.Errorf("add neighbour %s: %w", t.OverlayRemote, err)
		}
		nh, err := wanNexthop(link, t)
		if err != nil {
			return out, err
		}
		if !managed[nh] {
			if err := h.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_INET,
				IP: nh.AsSlice(), FlagsExt: netlink.NTF_EXT_MANAGED}); err != nil {
				return out, fmt.Errorf("add managed neighbour for next hop %s (kernel 5.16+): %w", nh, err)
			}
			managed[nh] = true
		}
		t.WANNexthop = nh
		byID[t.ID] = t
		out = append(out, t)
	}
	have, err := Ours(idx)
	if err != nil {
		return out, err
	}
	installed := map[netip.Prefix]netlink.Route{}
	for _, r := range have {
		installed[prefixOf(r)] = r
	}
	batch, err := newRouteBatch()
	if err != nil {
		return out, err
	}
	defer batch.Close()
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
		want[r.Prefix] = true
		if old, ok := installed[r.Prefix]; ok && sameRoute(old, rt) {
			continue
		}
		if err := batch.replace(rt); err != nil {
			return out, err
		}
	}
	for p, r := range installed {
		if !want[p] {
			if err := batch.del(&r); err != nil {
				return out, err
			}
		}
	}
	return out, batch.flush()
}

func prefixOf(r netlink.Route) netip.Prefix {
	if r.Dst == nil {
		return netip.Prefix{}
	}
	a, _ := netip.AddrFromSlice(r.Dst.IP.To4())
	ones, _ := r.Dst.Mask.Size()
	return netip.PrefixFrom(a, ones)
}

// sameRoute compares what Apply sets.
func sameRoute(a netlink.Route, b *netlink.Route) bool {
	return a.Gw.Equal(b.Gw) && a.Src.Equal(b.Src) && a.MTU == b.MTU && a.Scope == b.Scope
}

// managedNeighbours lists the device's managed neighbour entries: an entry
// that already is managed (and its resolved address) is left alone.
func managedNeighbours(h *netlink.Handle, ifindex int) (map[netip.Addr]bool, error) {
	ns, err := h.NeighList(ifindex, unix.AF_INET)
	if err != nil {
		return nil, fmt.Errorf("list neighbours: %w", err)
	}
	out := map[netip.Addr]bool{}
	for _, n := range ns {
		if a, ok := netip.AddrFromSlice(n.IP.To4()); ok && n.FlagsExt&netlink.NTF_EXT_MANAGED != 0 {
			out[a] = true
		}
	}
	return out, nil
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

// deleteRoutes deletes rs; ones already gone are fine.
func deleteRoutes(rs []netlink.Route) error {
	batch, err := newRouteBatch()
	if err != nil {
		return err
	}
	defer batch.Close()
	for _, r := range rs {
		if err := batch.del(&r); err != nil {
			return err
		}
	}
	return batch.flush()
}

// Remove takes out the kernel side of tunnels: their routes, neighbours and
// the overlay addresses attach added. With all set, every grebpf route on
// the device goes too. Missing pieces are not errors: detach must be able
// to finish a half-done attach.
func Remove(ifindex int, tunnels []maps.Tunnel, all bool) error {
	var errs []error
	rs, err := Ours(ifindex)
	errs = append(errs, err)
	gone := map[string]bool{}
	for _, t := range tunnels {
		gone[t.OverlayRemote.String()] = true
	}
	rs = slices.DeleteFunc(rs, func(r netlink.Route) bool {
		peer := r.Gw
		if peer == nil && r.Dst != nil {
			peer = r.Dst.IP
		}
		return !all && (peer == nil || !gone[peer.String()])
	})
	errs = append(errs, deleteRoutes(rs))
	for _, t := range tunnels {
		n := &netlink.Neigh{LinkIndex: ifindex, Family: unix.AF_INET, IP: t.OverlayRemote.AsSlice()}
		if err := netlink.NeighDel(n); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete neighbour %s: %w", t.OverlayRemote, err))
		}
		if t.WANNexthop.IsValid() {
			// Shared next hops go with the first tunnel: ENOENT after that.
			n := &netlink.Neigh{LinkIndex: ifindex, Family: unix.AF_INET, IP: t.WANNexthop.AsSlice()}
			if err := netlink.NeighDel(n); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("delete managed neighbour %s: %w", t.WANNexthop, err))
			}
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
