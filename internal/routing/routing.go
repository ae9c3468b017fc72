// Package routing sets up the kernel side of grebpf's tunnels: one
// interface per tunnel holding its overlay address, point-to-point with the
// peer's, the routes grebpf was asked to send into it, and a managed
// neighbour that keeps the outer next hop resolved. The interface is how
// the kernel hands packets to the BPF programs and takes them back, so any
// route through it (grebpf's, `ip route`, a routing daemon's) is tunnelled.
package routing

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/grebpf/grebpf/internal/tunnel"
)

// Proto marks the routes grebpf installs (`ip route show proto 177`), so
// detach and reconfiguration touch exactly those.
const Proto netlink.RouteProtocol = 177

// Alias marks the devices grebpf made (ip link shows "alias grebpf"), so
// that it never takes over or deletes a device of someone else's.
const Alias = "grebpf"

// PeerName names a tunnel interface's veth peer.
func PeerName(name string) string { return name + "p" }

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func host(a netip.Addr) *net.IPNet { return ipNet(netip.PrefixFrom(a, a.BitLen())) }

// PrefixOf is a route's destination as a prefix (nil: the default route).
func PrefixOf(dst *net.IPNet) netip.Prefix {
	if dst == nil {
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	a, _ := netip.AddrFromSlice(dst.IP.To4())
	ones, _ := dst.Mask.Size()
	return netip.PrefixFrom(a, ones)
}

// Check refuses, before anything changes, a configuration the kernel side
// cannot take: a local endpoint that is not ours, a remote not reached
// through wan, an overlay address used elsewhere, a prefix that overlaps a
// route grebpf does not own, a route that would carry a tunnel's own outer
// packets. Addresses and routes on the devices in own (grebpf's tunnel
// interfaces) are grebpf's.
func Check(wan netlink.Link, tunnels []tunnel.Tunnel, routes []tunnel.Route, own ...int) error {
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
		if _, err := WANNexthop(wan, t); err != nil {
			return err
		}
		if _, ok := where[t.Local]; !ok {
			return fmt.Errorf("tunnel %s: local %s is not an address of this namespace: use the WAN device's own address", t.Name, t.Local)
		}
		if idx, ok := where[t.OverlayLocal]; ok {
			return fmt.Errorf("tunnel %s: overlay %s is already assigned to another device (ifindex %d): remove it or pick another overlay address", t.Name, t.OverlayLocal, idx)
		}
	}
	kernel, err := netlink.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	kernel = slices.DeleteFunc(kernel, func(kr netlink.Route) bool {
		return kr.Protocol == Proto || slices.Contains(own, kr.LinkIndex)
	})
	for _, kr := range kernel {
		kpfx := PrefixOf(kr.Dst)
		for _, r := range routes {
			if r.Prefix == kpfx || kpfx.Bits() > 0 && r.Prefix.Overlaps(kpfx) {
				return fmt.Errorf("route %s overlaps the kernel route %s dev %s: remove that route or choose another prefix", r.Prefix, kpfx, linkName(kr.LinkIndex))
			}
		}
	}
	// A tunnel route may contain a remote (a default route through the
	// tunnel, say) only where a more specific route takes the remote out
	// of the WAN device.
	for _, t := range tunnels {
		best := -1
		for _, kr := range kernel {
			if p := PrefixOf(kr.Dst); p.Contains(t.Remote) && p.Bits() > best && kr.LinkIndex == wan.Attrs().Index {
				best = p.Bits()
			}
		}
		for _, r := range routes {
			if r.Prefix.Contains(t.Remote) && r.Prefix.Bits() >= best {
				return fmt.Errorf("route %s would carry tunnel %s's own remote %s into a tunnel: add a more specific route to %s through %s first", r.Prefix, t.Name, t.Remote, t.Remote, wan.Attrs().Name)
			}
		}
	}
	return nil
}

func linkName(ifindex int) string {
	if l, err := netlink.LinkByIndex(ifindex); err == nil {
		return l.Attrs().Name
	}
	return fmt.Sprintf("ifindex %d", ifindex)
}

// WANNexthop is the outer next hop towards t's remote, which must be
// reached through wan: encap looks the route up with wan as output.
func WANNexthop(wan netlink.Link, t tunnel.Tunnel) (netip.Addr, error) {
	rs, err := netlink.RouteGet(t.Remote.AsSlice())
	if err != nil || len(rs) == 0 {
		return netip.Addr{}, fmt.Errorf("tunnel %s: no route to remote %s: add one through %s", t.Name, t.Remote, wan.Attrs().Name)
	}
	if rs[0].LinkIndex != wan.Attrs().Index {
		return netip.Addr{}, fmt.Errorf("tunnel %s: remote %s is routed through %s, not %s: attach to the device that reaches it", t.Name, t.Remote, linkName(rs[0].LinkIndex), wan.Attrs().Name)
	}
	if gw, ok := netip.AddrFromSlice(rs[0].Gw.To4()); ok {
		return gw, nil
	}
	return t.Remote, nil
}

// Interface makes or updates tunnel t's interface for the BPF data plane:
// a veth pair, NAME and NAMEp, MTU t.MTU, no ARP (nothing ever resolves a
// neighbour on it), no IPv6 (grebpf carries IPv4), GRO on NAME (so what
// crosses the pair is received through NAPI and GRO, as from a NIC, not
// the per-CPU backlog), both up, and NAME holding
// OVERLAY peer PEER. It returns t with Link filled in.
func Interface(h *netlink.Handle, wan netlink.Link, t tunnel.Tunnel) (tunnel.Tunnel, error) {
	peer := PeerName(t.Name)
	l, err := h.LinkByName(t.Name)
	if err == nil && (l.Type() != "veth" || l.Attrs().Alias != Alias) {
		return t, fmt.Errorf("a device named %s exists and is not grebpf's: remove it or name the tunnel differently", t.Name)
	}
	if err != nil {
		if _, err := h.LinkByName(peer); err == nil {
			return t, fmt.Errorf("a device named %s exists and is not grebpf's: remove it or name the tunnel differently", peer)
		}
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: t.Name, MTU: int(t.MTU)}, PeerName: peer, PeerMTU: uint32(t.MTU)}
		if err := h.LinkAdd(v); err != nil {
			return t, fmt.Errorf("create tunnel interface %s: %w", t.Name, err)
		}
	}
	l, err = h.LinkByName(t.Name)
	if err != nil {
		return t, fmt.Errorf("tunnel interface %s: %w", t.Name, err)
	}
	p, err := h.LinkByName(peer)
	if err != nil {
		return t, fmt.Errorf("tunnel interface %s has no peer %s: run grebpf detach, then attach", t.Name, peer)
	}
	for _, d := range []netlink.Link{l, p} {
		name := d.Attrs().Name
		if d.Attrs().Alias != Alias {
			if err := h.LinkSetAlias(d, Alias); err != nil {
				return t, fmt.Errorf("mark %s: %w", name, err)
			}
		}
		if d.Attrs().MTU != int(t.MTU) {
			if err := h.LinkSetMTU(d, int(t.MTU)); err != nil {
				return t, fmt.Errorf("set MTU of %s: %w", name, err)
			}
		}
		if err := disableIPv6(name); err != nil {
			return t, err
		}
	}
	// encap_tc answers a sender on this host whose packet is too big for
	// the path with an ICMP error from that same host address, handed to
	// the stack on the tunnel interface; the kernel takes a local source
	// there only with accept_local. A peer cannot use it to spoof one
	// while the tunnel's inner source check is on: it drops a local
	// source first.
	if err := os.WriteFile(filepath.Join("/proc/sys/net/ipv4/conf", t.Name, "accept_local"), []byte("1"), 0); err != nil {
		return t, fmt.Errorf("set accept_local on %s: %w", t.Name, err)
	}
	if l.Attrs().RawFlags&unix.IFF_NOARP == 0 {
		if err := h.LinkSetARPOff(l); err != nil {
			return t, fmt.Errorf("set %s arp off: %w", t.Name, err)
		}
	}
	if on, err := GROEnabled(t.Name); err != nil || !on {
		if err := SetGRO(t.Name, true); err != nil {
			return t, fmt.Errorf("turn GRO on for %s: %w", t.Name, err)
		}
	}
	// A BPF decap cannot clear the kernel's "encapsulated" mark on what
	// it hands on, and encap_tc cannot give a GSO packet so marked a new
	// GRE header (transit between tunnels, tunnels inside the tunnel).
	// Without these features the stack segments such packets before
	// they cross to encap_tc; plain TCP keeps its GSO.
	if err := SetFeatures(t.Name, false, innerTunnelGSO...); err != nil {
		return t, fmt.Errorf("turn off tunnel segmentation offloads on %s: %w", t.Name, err)
	}
	// Encap numbers or sums each packet it sends with a sequence number
	// or a checksum, so the stack segments GSO packets before they
	// cross (ip_gre with oseq gives up GSO too).
	if err := SetFeatures(t.Name, !t.OSeq && !t.OCsum, segmentationOffloads...); err != nil {
		return t, fmt.Errorf("set segmentation offloads on %s: %w", t.Name, err)
	}
	if err := h.LinkSetUp(p); err != nil {
		return t, fmt.Errorf("set %s up: %w", peer, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return t, fmt.Errorf("set %s up: %w", t.Name, err)
	}
	if err := overlayAddress(h, l, t); err != nil {
		return t, err
	}
	t.Link = tunnel.Link{Ifindex: uint32(l.Attrs().Index), PeerIfindex: uint32(p.Attrs().Index), WANIfindex: uint32(wan.Attrs().Index)}
	copy(t.Link.MAC[:], l.Attrs().HardwareAddr)
	copy(t.Link.PeerMAC[:], p.Attrs().HardwareAddr)
	return t, nil
}

// overlayAddress leaves exactly OVERLAY peer PEER on l.
func overlayAddress(h *netlink.Handle, l netlink.Link, t tunnel.Tunnel) error {
	want := &netlink.Addr{IPNet: host(t.OverlayLocal), Peer: host(t.OverlayRemote)}
	have, err := h.AddrList(l, unix.AF_INET)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", t.Name, err)
	}
	found := false
	for _, a := range have {
		if a.IP.Equal(want.IP) && a.Peer != nil && a.Peer.IP.Equal(want.Peer.IP) {
			found = true
			continue
		}
		if err := h.AddrDel(l, &a); err != nil {
			return fmt.Errorf("remove old address %s from %s: %w", a.IPNet, t.Name, err)
		}
	}
	if !found {
		if err := h.AddrAdd(l, want); err != nil {
			return fmt.Errorf("add %s peer %s to %s: %w", t.OverlayLocal, t.OverlayRemote, t.Name, err)
		}
	}
	return nil
}

// disableIPv6 keeps the kernel from sending router solicitations and
// MLD reports into a tunnel that carries IPv4 only. A kernel without IPv6
// has nothing to disable.
func disableIPv6(dev string) error {
	err := os.WriteFile(filepath.Join("/proc/sys/net/ipv6/conf", dev, "disable_ipv6"), []byte("1"), 0)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("disable IPv6 on %s: %w", dev, err)
	}
	return nil
}

// DeleteInterface removes a tunnel interface grebpf made (its peer, its
// addresses and every route through it go with it). A missing one is
// fine: detach must be able to finish a half-done attach.
func DeleteInterface(ifindex uint32) error {
	l, err := netlink.LinkByIndex(int(ifindex))
	if err != nil || l.Attrs().Alias != Alias {
		return nil
	}
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete tunnel interface %s: %w", l.Attrs().Name, err)
	}
	return nil
}

// KeepResolved gives each distinct outer next hop a managed neighbour entry
// on wan, which the kernel keeps resolved: encap then always finds its
// MAC. It returns the tunnels with WANNexthop set, and whether it added an
// entry.
func KeepResolved(h *netlink.Handle, wan netlink.Link, tunnels []tunnel.Tunnel) ([]tunnel.Tunnel, bool, error) {
	idx := wan.Attrs().Index
	ns, err := h.NeighList(idx, unix.AF_INET)
	if err != nil {
		return nil, false, fmt.Errorf("list neighbours: %w", err)
	}
	changed := false
	managed := map[netip.Addr]bool{}
	for _, n := range ns {
		if a, ok := netip.AddrFromSlice(n.IP.To4()); ok && n.FlagsExt&netlink.NTF_EXT_MANAGED != 0 {
			managed[a] = true
		}
	}
	out := slices.Clone(tunnels)
	for i, t := range out {
		nh, err := WANNexthop(wan, t)
		if err != nil {
			return nil, changed, err
		}
		if !managed[nh] {
			if err := h.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_INET,
				IP: nh.AsSlice(), FlagsExt: netlink.NTF_EXT_MANAGED}); err != nil {
				return nil, changed, fmt.Errorf("add managed neighbour for next hop %s (kernel 5.16+): %w", nh, err)
			}
			managed[nh] = true
			changed = true
		}
		out[i].WANNexthop = nh
	}
	return out, changed, nil
}

// ForgetNeighbours deletes the managed neighbours on wanIfindex for the
// next hops in gone that keep does not use.
func ForgetNeighbours(wanIfindex int, gone, keep []netip.Addr) error {
	var errs []error
	done := map[netip.Addr]bool{}
	for _, nh := range gone {
		if !nh.IsValid() || done[nh] || slices.Contains(keep, nh) {
			continue
		}
		done[nh] = true
		n := &netlink.Neigh{LinkIndex: wanIfindex, Family: unix.AF_INET, IP: nh.AsSlice()}
		if err := netlink.NeighDel(n); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete managed neighbour %s: %w", nh, err))
		}
	}
	return errors.Join(errs...)
}

// OwnInterfaces lists the ifindexes of the tunnel interfaces (and their
// veth peers) grebpf made in this namespace, whether or not a data plane
// records them.
func OwnInterfaces() ([]int, error) {
	ls, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []int
	for _, l := range ls {
		if l.Type() == "veth" && l.Attrs().Alias == Alias {
			out = append(out, l.Attrs().Index)
		}
	}
	return out, nil
}

// Routes makes grebpf's routes on the tunnel interfaces exactly routes:
// `PREFIX dev TUNNEL src OVERLAY proto 177`, as the seed writes them for
// ip_gre (`src` makes the kernel's ICMP errors come from the overlay
// address). Routes through a tunnel that others added are left alone.
// tunnels must have Link.Ifindex set.
func Routes(tunnels []tunnel.Tunnel, routes []tunnel.Route) error {
	byName := map[string]tunnel.Tunnel{}
	for _, t := range tunnels {
		byName[t.Name] = t
	}
	have, err := Ours(tunnels)
	if err != nil {
		return err
	}
	type key struct {
		prefix  netip.Prefix
		ifindex int
	}
	installed := map[key]netlink.Route{}
	for _, r := range have {
		installed[key{PrefixOf(r.Dst), r.LinkIndex}] = r
	}
	batch, err := newRouteBatch()
	if err != nil {
		return err
	}
	defer batch.Close()
	want := map[key]bool{}
	for _, r := range routes {
		t, ok := byName[r.Tunnel]
		if !ok || t.Link.Ifindex == 0 {
			return fmt.Errorf("route %s: tunnel %s has no interface", r.Prefix, r.Tunnel)
		}
		rt := &netlink.Route{
			LinkIndex: int(t.Link.Ifindex), Dst: ipNet(r.Prefix), Src: t.OverlayLocal.AsSlice(),
			Protocol: Proto, Table: unix.RT_TABLE_MAIN, Scope: netlink.SCOPE_LINK,
		}
		k := key{r.Prefix, rt.LinkIndex}
		want[k] = true
		if old, ok := installed[k]; ok && old.Src.Equal(rt.Src) {
			continue
		}
		if err := batch.replace(rt); err != nil {
			return err
		}
	}
	for k, r := range installed {
		if !want[k] {
			if err := batch.del(&r); err != nil {
				return err
			}
		}
	}
	return batch.flush()
}

// Ours lists the routes grebpf installed through the tunnels' interfaces.
func Ours(tunnels []tunnel.Tunnel) ([]netlink.Route, error) {
	rs, err := netlink.RouteListFiltered(unix.AF_INET,
		&netlink.Route{Protocol: Proto, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list grebpf routes: %w", err)
	}
	devs := map[int]bool{}
	for _, t := range tunnels {
		devs[int(t.Link.Ifindex)] = true
	}
	return slices.DeleteFunc(rs, func(r netlink.Route) bool { return !devs[r.LinkIndex] }), nil
}
