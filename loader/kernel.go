package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/grebpf/grebpf/internal/config"
	"github.com/grebpf/grebpf/internal/routing"
	"github.com/grebpf/grebpf/internal/tunnel"
)

// kernelAlias marks the ip_gre netdevs grebpf made (ip link shows it as
// "alias grebpf"), so detach and show find exactly those.
const kernelAlias = "grebpf"

// HaveIPGRE says whether this kernel can make ip_gre tunnels.
func HaveIPGRE() bool {
	if _, err := os.Stat("/sys/module/ip_gre"); err == nil {
		return true
	}
	return exec.Command("modprobe", "-q", "ip_gre").Run() == nil
}

// HaveIP6GRE says whether this kernel can make ip6gre tunnels.
func HaveIP6GRE() bool {
	if _, err := os.Stat("/sys/module/ip6_gre"); err == nil {
		return true
	}
	return exec.Command("modprobe", "-q", "ip6_gre").Run() == nil
}

// ErrNoIPGRE is the one-line answer where ip_gre is missing.
var ErrNoIPGRE = errors.New("this kernel has no ip_gre (modprobe ip_gre fails): use --mode bpf, or run it in a VM with make test-vm")

// kernelLinks lists the ip_gre netdevs grebpf made in this namespace.
func kernelLinks() ([]*netlink.Gretun, error) {
	ls, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []*netlink.Gretun
	for _, l := range ls {
		if g, ok := l.(*netlink.Gretun); ok && g.Attrs().Alias == kernelAlias {
			out = append(out, g)
		}
	}
	return out, nil
}

// KernelAttached says whether grebpf's ip_gre tunnels exist here.
func KernelAttached() bool {
	ls, err := kernelLinks()
	return err == nil && len(ls) > 0
}

// AttachKernel realises r with one ip_gre netdev per tunnel: the same
// endpoints, key, TTL, TOS policy (pmtudisc on, so DF is set as in BPF
// mode), overlay addresses and routes. It is idempotent: existing tunnels
// with the same name are replaced.
func AttachKernel(ns string, r config.Router) (rep Report, err error) {
	l, plan, err := resolve(ns, r)
	if err != nil {
		return rep, err
	}
	if !HaveIPGRE() {
		return rep, ErrNoIPGRE
	}
	// Our own earlier tunnels are not a conflict: they are replaced.
	existing, err := kernelLinks()
	if err != nil {
		return rep, err
	}
	var own []int
	for _, g := range existing {
		own = append(own, g.Attrs().Index)
	}
	if err := routing.Check(l, plan.Tunnels, plan.Routes, own...); err != nil {
		return rep, err
	}
	fresh := len(existing) == 0
	defer func() {
		if err != nil && fresh {
			DetachKernel()
		}
	}()
	rep = Report{Device: r.Device, Decap: "ip_gre", TC: "none", Changed: true}
	want := map[string]bool{}
	var made []tunnel.Tunnel
	for _, t := range plan.Tunnels {
		want[t.Name] = true
		if old, err := netlink.LinkByName(t.Name); err == nil {
			if old.Attrs().Alias != kernelAlias {
				return rep, fmt.Errorf("a device named %s exists and is not grebpf's: name the tunnel differently", t.Name)
			}
			if err := netlink.LinkDel(old); err != nil {
				return rep, fmt.Errorf("replace %s: %w", t.Name, err)
			}
		}
		g, err := addGRE(t, l.Attrs().Index)
		if err != nil {
			return rep, err
		}
		if err := netlink.LinkSetAlias(g, kernelAlias); err != nil {
			return rep, fmt.Errorf("mark %s: %w", t.Name, err)
		}
		// The kernel's rp_filter does on ip_gre what decap does in BPF.
		rpf := map[tunnel.RPFilter]string{tunnel.RPStrict: "1", tunnel.RPLoose: "2", tunnel.RPOff: "0"}[t.RPFilter]
		if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+t.Name+"/rp_filter", []byte(rpf), 0); err != nil {
			return rep, fmt.Errorf("set rp_filter of %s: %w", t.Name, err)
		}
		if err := routing.SetIPv6(t.Name, t.CarriesIPv6()); err != nil {
			return rep, err
		}
		// Up before the addresses: on 6.1 an IPv6 address with a peer added
		// to a down device never gets its peer route when the device comes up.
		if err := netlink.LinkSetUp(g); err != nil {
			return rep, fmt.Errorf("set %s up: %w", t.Name, err)
		}
		for _, a := range [][2]netip.Addr{{t.OverlayLocal, t.OverlayRemote}, {t.Overlay6Local, t.Overlay6Remote}} {
			if !a[0].IsValid() {
				continue
			}
			addr := &netlink.Addr{IPNet: hostNet(a[0]), Peer: hostNet(a[1])}
			if a[0].Is6() {
				// Not tentative, so the routes with it as src go in at once.
				addr.Flags = unix.IFA_F_NODAD
			}
			if err := netlink.AddrAdd(g, addr); err != nil {
				return rep, fmt.Errorf("add %s peer %s to %s: %w", a[0], a[1], t.Name, err)
			}
		}
		t.Link.Ifindex = uint32(g.Attrs().Index)
		made = append(made, t)
	}
	if err := routing.Routes(made, plan.Routes); err != nil {
		return rep, err
	}
	for _, old := range existing {
		if !want[old.Attrs().Name] {
			if err := netlink.LinkDel(old); err != nil {
				return rep, fmt.Errorf("remove tunnel %s: %w", old.Attrs().Name, err)
			}
		}
	}
	return rep, nil
}

// addGRE makes t's kernel tunnel on the WAN device lower: ip_gre, or
// ip6gre for IPv6 endpoints.
func addGRE(t tunnel.Tunnel, lower int) (netlink.Link, error) {
	if t.Local.Is6() {
		return addIP6GRE(t, lower)
	}
	g := &netlink.Gretun{
		LinkAttrs: netlink.LinkAttrs{Name: t.Name},
		Link:      uint32(lower),
		Local:     t.Local.AsSlice(), Remote: t.Remote.AsSlice(),
		Ttl: t.TTL, Tos: t.TOS, PMtuDisc: 1,
		IFlags: greFlags(t.IKey, t.ISeq, t.ICsum), OFlags: greFlags(t.OKey, t.OSeq, t.OCsum),
	}
	if t.TOSInherit {
		g.Tos = 1 // ip_gre's "tos inherit"
	}
	if t.NoPMTUDisc {
		g.PMtuDisc = 0
	}
	if t.IKey != nil {
		g.IKey = *t.IKey
	}
	if t.OKey != nil {
		g.OKey = *t.OKey
	}
	if err := netlink.LinkAdd(g); err != nil {
		return nil, fmt.Errorf("add ip_gre tunnel %s: %w", t.Name, err)
	}
	return g, nil
}

// greFlags are t's GRE flags in (ip_gre's iflags) and out (oflags).
func greFlags(key *uint32, seq, csum bool) uint16 {
	var f uint16
	if key != nil {
		f |= nl.GRE_KEY
	}
	if seq {
		f |= nl.GRE_SEQ
	}
	if csum {
		f |= nl.GRE_CSUM
	}
	return f
}

// ip6gre's IFLA_GRE_FLAGS (linux/ip6_tunnel.h).
const (
	ip6TunnelIgnoreEncapLimit = 0x1
	ip6TunnelUseOrigTClass    = 0x2
)

// addIP6GRE makes t as ip6gre. The netlink library's Gretun cannot say
// what ip6gre needs said (the encapsulation limit, "tclass inherit"):
// without them ip6gre would send a limit of 0 and a fixed traffic class,
// so the request is written here, as ip(8) writes it.
func addIP6GRE(t tunnel.Tunnel, lower int) (netlink.Link, error) {
	be16 := func(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
	be32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(t.Name)))
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("ip6gre"))
	data := info.AddRtAttr(nl.IFLA_INFO_DATA, nil)
	data.AddRtAttr(nl.IFLA_GRE_LINK, nl.Uint32Attr(uint32(lower)))
	data.AddRtAttr(nl.IFLA_GRE_LOCAL, t.Local.AsSlice())
	data.AddRtAttr(nl.IFLA_GRE_REMOTE, t.Remote.AsSlice())
	if t.IKey != nil {
		data.AddRtAttr(nl.IFLA_GRE_IKEY, be32(*t.IKey))
	}
	if t.OKey != nil {
		data.AddRtAttr(nl.IFLA_GRE_OKEY, be32(*t.OKey))
	}
	data.AddRtAttr(nl.IFLA_GRE_IFLAGS, be16(greFlags(t.IKey, t.ISeq, t.ICsum)))
	data.AddRtAttr(nl.IFLA_GRE_OFLAGS, be16(greFlags(t.OKey, t.OSeq, t.OCsum)))
	data.AddRtAttr(nl.IFLA_GRE_TTL, nl.Uint8Attr(t.TTL))
	var flags uint32
	if t.EncapLimit < 0 {
		flags |= ip6TunnelIgnoreEncapLimit
	} else {
		data.AddRtAttr(nl.IFLA_GRE_ENCAP_LIMIT, nl.Uint8Attr(uint8(t.EncapLimit)))
	}
	if t.TOSInherit {
		flags |= ip6TunnelUseOrigTClass
	}
	data.AddRtAttr(nl.IFLA_GRE_FLOWINFO, be32(uint32(t.TOS)<<20))
	data.AddRtAttr(nl.IFLA_GRE_FLAGS, nl.Uint32Attr(flags))
	req.AddData(info)
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return nil, fmt.Errorf("add ip6gre tunnel %s: %w", t.Name, err)
	}
	g, err := netlink.LinkByName(t.Name)
	if err != nil {
		return nil, fmt.Errorf("add ip6gre tunnel %s: %w", t.Name, err)
	}
	return g, nil
}

// ip6greParms reads back what addIP6GRE set that the netlink library
// does not parse: the encapsulation limit (-1: none), and the traffic
// class policy.
func ip6greParms(ifindex int) (encapLimit int, tclassInherit bool, tclass uint8, err error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(ifindex)
	req.AddData(msg)
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
	if err != nil || len(msgs) == 0 {
		return 0, false, 0, fmt.Errorf("read ip6gre ifindex %d: %w", ifindex, err)
	}
	attrs, err := nl.ParseRouteAttr(msgs[0][unix.SizeofIfInfomsg:])
	if err != nil {
		return 0, false, 0, err
	}
	var flags uint32
	for _, a := range attrs {
		if a.Attr.Type != unix.IFLA_LINKINFO {
			continue
		}
		infos, err := nl.ParseRouteAttr(a.Value)
		if err != nil {
			return 0, false, 0, err
		}
		for _, i := range infos {
			if i.Attr.Type != nl.IFLA_INFO_DATA {
				continue
			}
			data, err := nl.ParseRouteAttr(i.Value)
			if err != nil {
				return 0, false, 0, err
			}
			for _, d := range data {
				switch {
				case d.Attr.Type == nl.IFLA_GRE_ENCAP_LIMIT && len(d.Value) >= 1:
					encapLimit = int(d.Value[0])
				case d.Attr.Type == nl.IFLA_GRE_FLAGS && len(d.Value) >= 4:
					flags = binary.NativeEndian.Uint32(d.Value)
				case d.Attr.Type == nl.IFLA_GRE_FLOWINFO && len(d.Value) >= 4:
					tclass = uint8(binary.BigEndian.Uint32(d.Value) >> 20)
				}
			}
		}
	}
	if flags&ip6TunnelIgnoreEncapLimit != 0 {
		encapLimit = -1
	}
	return encapLimit, flags&ip6TunnelUseOrigTClass != 0, tclass, nil
}

func hostNet(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}
}

// DetachKernel deletes grebpf's ip_gre netdevs; their addresses and
// routes go with them.
func DetachKernel() error {
	ls, err := kernelLinks()
	if err != nil {
		return err
	}
	var errs []error
	for _, l := range ls {
		if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete %s: %w", l.Attrs().Name, err))
		}
	}
	return errors.Join(errs...)
}

// KernelState reads grebpf's ip_gre tunnels for show and stats.
func KernelState(ns string) (State, error) {
	s := State{Netns: ns, Mode: config.ModeKernel}
	ls, err := kernelLinks()
	if err != nil {
		return s, err
	}
	for _, g := range ls {
		t := tunnel.Tunnel{Name: g.Attrs().Name, TTL: g.Ttl, MTU: uint16(g.Attrs().MTU),
			Link: tunnel.Link{Ifindex: uint32(g.Attrs().Index), WANIfindex: g.Link}}
		t.Local, _ = netip.AddrFromSlice(g.Local)
		t.Remote, _ = netip.AddrFromSlice(g.Remote)
		t.Local, t.Remote = t.Local.Unmap(), t.Remote.Unmap()
		t.TOSInherit = g.Tos&1 != 0
		t.NoPMTUDisc = g.PMtuDisc == 0
		t.TOS = g.Tos &^ 1
		if t.Local.Is6() {
			t.NoPMTUDisc = false
			if t.EncapLimit, t.TOSInherit, t.TOS, err = ip6greParms(g.Attrs().Index); err != nil {
				return s, err
			}
		}
		if g.OFlags&nl.GRE_KEY != 0 {
			k := g.OKey
			t.OKey = &k
		}
		if g.IFlags&nl.GRE_KEY != 0 {
			k := g.IKey
			t.IKey = &k
		}
		t.ISeq, t.OSeq = g.IFlags&nl.GRE_SEQ != 0, g.OFlags&nl.GRE_SEQ != 0
		t.ICsum, t.OCsum = g.IFlags&nl.GRE_CSUM != 0, g.OFlags&nl.GRE_CSUM != 0
		if dev, err := netlink.LinkByIndex(int(g.Link)); err == nil {
			s.Device = dev.Attrs().Name
		}
		if addrs, err := netlink.AddrList(g, unix.AF_INET); err == nil && len(addrs) > 0 {
			t.OverlayLocal, _ = netip.AddrFromSlice(addrs[0].IP.To4())
			if addrs[0].Peer != nil {
				t.OverlayRemote, _ = netip.AddrFromSlice(addrs[0].Peer.IP.To4())
			}
		}
		if addrs, err := netlink.AddrList(g, unix.AF_INET6); err == nil {
			for _, a := range addrs {
				if a.Scope == unix.RT_SCOPE_UNIVERSE && a.Peer != nil {
					t.Overlay6Local, _ = netip.AddrFromSlice(a.IP)
					t.Overlay6Remote, _ = netip.AddrFromSlice(a.Peer.IP)
					break
				}
			}
		}
		if b, err := os.ReadFile("/proc/sys/net/ipv4/conf/" + t.Name + "/rp_filter"); err == nil {
			t.RPFilter = map[string]tunnel.RPFilter{"0": tunnel.RPOff, "1": tunnel.RPStrict, "2": tunnel.RPLoose}[strings.TrimSpace(string(b))]
		}
		st := g.Attrs().Statistics
		var c tunnel.Counters
		if st != nil {
			c = tunnel.Counters{RxPackets: st.RxPackets, RxBytes: st.RxBytes, TxPackets: st.TxPackets, TxBytes: st.TxBytes}
		}
		ts := TunnelState{Tunnel: t, Counters: c}
		// ip_gre's path MTU is the kernel's exception on the outer route.
		if rs, err := netlink.RouteGet(t.Remote.AsSlice()); err == nil && len(rs) > 0 && rs[0].MTU > 0 {
			ts.PathMTU = uint32(rs[0].MTU)
		}
		s.Tunnels = append(s.Tunnels, ts)
	}
	var err2 error
	s.Routes, err2 = routesThrough(s.Tunnels)
	if err2 != nil {
		return s, err2
	}
	return s, nil
}
