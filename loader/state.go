package loader

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/grebpf/grebpf/internal/config"
	"github.com/grebpf/grebpf/internal/routing"
	"github.com/grebpf/grebpf/internal/tunnel"
	"github.com/grebpf/grebpf/maps"
)

// TunnelState is a tunnel with its counters and what ICMP taught about
// the path to its remote.
type TunnelState struct {
	tunnel.Tunnel
	tunnel.Counters
	// PathMTU is the learned outer path MTU, 0 when none holds; it holds
	// for PathMTUExpires more (0 where the kernel does not say).
	PathMTU        uint32
	PathMTUExpires time.Duration
	// Health is up or down while grebpf run probes the tunnel, else "".
	Health string
}

// State is everything show and stats report about a data plane.
type State struct {
	Netns      string
	Mode       string // bpf | kernel
	Dir        string
	Device     string
	Attachment maps.Attachment
	Tunnels    []TunnelState
	Routes     []tunnel.Route // every route through a tunnel interface, whoever added it
	Reasons    []uint64       // indexed by maps.Reason
	FastPath   []string       // LAN devices with the XDP fast path
	// Problems are what stops or slows the tunnels' traffic now, each
	// with its fix.
	Problems []string
}

// ReadState reads a pinned data plane.
func ReadState(ns string) (State, error) {
	s := State{Netns: ns, Mode: config.ModeBPF}
	d, err := Open(ns)
	if err != nil {
		return s, err
	}
	defer d.Close()
	s.Dir = d.Dir
	if s.Attachment, err = maps.ReadAttachment(&d.Maps); err != nil {
		return s, err
	}
	s.Device = fmt.Sprintf("ifindex %d (gone)", s.Attachment.Ifindex)
	if l, err := netlink.LinkByIndex(int(s.Attachment.Ifindex)); err == nil {
		s.Device = l.Attrs().Name
	}
	ts, err := maps.Tunnels(&d.Maps)
	if err != nil {
		return s, err
	}
	var now unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &now); err != nil {
		return s, fmt.Errorf("read the clock: %w", err)
	}
	for _, t := range ts {
		c, err := maps.TunnelCounters(&d.Maps, t.Link.Ifindex)
		if err != nil {
			return s, err
		}
		if l, err := netlink.LinkByIndex(int(t.Link.Ifindex)); err == nil {
			t.MTU = uint16(l.Attrs().MTU)
		}
		ts := TunnelState{Tunnel: t, Counters: c}
		ts.PathMTU, ts.PathMTUExpires, _ = maps.PathMTU(&d.Maps, t, time.Duration(now.Nano()))
		s.Tunnels = append(s.Tunnels, ts)
	}
	if s.Routes, err = routesThrough(s.Tunnels); err != nil {
		return s, err
	}
	pins, _ := filepath.Glob(filepath.Join(d.Dir, pinFastPathPrefix+"*"))
	for _, p := range pins {
		idx, _ := strconv.Atoi(strings.TrimPrefix(filepath.Base(p), pinFastPathPrefix))
		name := fmt.Sprintf("ifindex %d (gone)", idx)
		if l, err := netlink.LinkByIndex(idx); err == nil {
			name = l.Attrs().Name
		}
		s.FastPath = append(s.FastPath, name)
	}
	s.Problems = problems(s)
	s.Reasons, err = maps.ReasonCounts(&d.Maps)
	return s, err
}

// DecapName, EncapName and TCName name the attach points recorded in an
// attachment.
func (s State) DecapName() string { return decapName(s.Attachment.Decap) }
func (s State) EncapName() string { return encapName(s.Attachment.Flags) }
func (s State) TCName() string    { return tcName(s.Attachment.Tc) }

// routesThrough lists the main table's routes whose device is one of the
// tunnels' interfaces, but for the link-local and multicast ones IPv6
// gives every link and the one it gives each address of the interface's
// own.
func routesThrough(ts []TunnelState) ([]tunnel.Route, error) {
	names := map[int]string{}
	own := map[netip.Prefix]bool{}
	for _, t := range ts {
		names[int(t.Link.Ifindex)] = t.Name
		if t.CarriesIPv6() {
			own[netip.PrefixFrom(t.Overlay6Local, 128)] = true
		}
	}
	rs, err := routing.Dump(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	var out []tunnel.Route
	for _, r := range rs {
		name, ok := names[r.LinkIndex]
		if !ok || routing.LinkScoped(r) || own[routing.RouteDst(r)] {
			continue
		}
		out = append(out, tunnel.Route{Prefix: routing.RouteDst(r), Tunnel: name})
	}
	return out, nil
}
