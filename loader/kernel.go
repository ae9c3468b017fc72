package loader

import (
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
		g := &netlink.Gretun{
			LinkAttrs: netlink.LinkAttrs{Name: t.Name},
			Link:      uint32(l.Attrs().Index),
			Local:     t.Local.AsSlice(), Remote: t.Remote.AsSlice(),
			Ttl: t.TTL, Tos: t.TOS, PMtuDisc: 1,
		}
		if t.TOSInherit {
			g.Tos = 1 // ip_gre's "tos inherit"
		}
		if t.NoPMTUDisc {
			g.PMtuDisc = 0
		}
		if t.IKey != nil {
			g.IKey, g.IFlags = *t.IKey, nl.GRE_KEY
		}
		if t.OKey != nil {
			g.OKey, g.OFlags = *t.OKey, nl.GRE_KEY
		}
		if t.ISeq {
			g.IFlags |= nl.GRE_SEQ
		}
		if t.OSeq {
			g.OFlags |= nl.GRE_SEQ
		}
		if t.ICsum {
			g.IFlags |= nl.GRE_CSUM
		}
		if t.OCsum {
			g.OFlags |= nl.GRE_CSUM
		}
		if old, err := netlink.LinkByName(t.Name); err == nil {
			if old.Attrs().Alias != kernelAlias {
				return rep, fmt.Errorf("a device named %s exists and is not grebpf's: name the tunnel differently", t.Name)
			}
			if err := netlink.LinkDel(old); err != nil {
				return rep, fmt.Errorf("replace %s: %w", t.Name, err)
			}
		}
		if err := netlink.LinkAdd(g); err != nil {
			return rep, fmt.Errorf("add ip_gre tunnel %s: %w", t.Name, err)
		}
		if err := netlink.LinkSetAlias(g, kernelAlias); err != nil {
			return rep, fmt.Errorf("mark %s: %w", t.Name, err)
		}
		// The kernel's rp_filter does on ip_gre what decap does in BPF.
		rpf := map[tunnel.RPFilter]string{tunnel.RPStrict: "1", tunnel.RPLoose: "2", tunnel.RPOff: "0"}[t.RPFilter]
		if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+t.Name+"/rp_filter", []byte(rpf), 0); err != nil {
			return rep, fmt.Errorf("set rp_filter of %s: %w", t.Name, err)
		}
		addr := &netlink.Addr{IPNet: hostNet(t.OverlayLocal), Peer: hostNet(t.OverlayRemote)}
		if err := netlink.AddrAdd(g, addr); err != nil {
			return rep, fmt.Errorf("add %s peer %s to %s: %w", t.OverlayLocal, t.OverlayRemote, t.Name, err)
		}
		if err := netlink.LinkSetUp(g); err != nil {
			return rep, fmt.Errorf("set %s up: %w", t.Name, err)
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

func hostNet(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}
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
		t.Local, _ = netip.AddrFromSlice(g.Local.To4())
		t.Remote, _ = netip.AddrFromSlice(g.Remote.To4())
		t.TOSInherit = g.Tos&1 != 0
		t.NoPMTUDisc = g.PMtuDisc == 0
		t.TOS = g.Tos &^ 1
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
