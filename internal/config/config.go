// Package config describes a grebpf router (a WAN device and its tunnels),
// read from flags or a YAML file, and checks it before anything is applied.
package config

import (
	"bytes"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/grebpf/grebpf/internal/tunnel"
)

// Modes: the BPF data plane, or the kernel's ip_gre as fallback and yardstick.
const (
	ModeBPF    = "bpf"
	ModeKernel = "kernel"
)

// Decap attach points.
const (
	DecapAuto = "auto"
	DecapXDP  = "xdp"
	DecapTC   = "tc"
)

// Encap attach points: the ingress of the tunnel interface's veth peer
// (packets cross the pair, so the interface shows what it transmits), or
// the interface's own egress (one crossing less, and the interface shows
// no transmitted packets).
const (
	EncapPeer   = "peer"
	EncapEgress = "egress"
)

// TC attach methods.
const (
	TCAuto   = "auto"
	TCX      = "tcx"
	TCClsact = "clsact"
)

// DefaultTTL is the outer TTL: fixed, so the WAN path never shows up in a
// traceroute through the tunnel.
const DefaultTTL = 64

// DefaultEncapLimit is ip6gre's tunnel encapsulation limit (RFC 2473's
// recommended default), sent over IPv6 unless a tunnel says otherwise.
const DefaultEncapLimit = 4

// Router is everything attach applies to one network namespace.
type Router struct {
	Device string `yaml:"device,omitempty"`
	// Mode is bpf (the default) or kernel (an ip_gre netdev per tunnel).
	Mode string `yaml:"mode,omitempty"`
	// Decap is where decapsulation runs: auto, xdp or tc.
	Decap string `yaml:"decap,omitempty"`
	// Encap is where encapsulation runs: peer or egress.
	Encap string `yaml:"encap,omitempty"`
	// XDPGeneric attaches XDP in generic (skb) mode instead of native.
	XDPGeneric bool `yaml:"xdp_generic,omitempty"`
	// TC is how TC programs attach: auto (tcx where the kernel has it), tcx, clsact.
	TC string `yaml:"tc,omitempty"`
	// FastPath lists LAN devices whose traffic into the tunnels XDP
	// encapsulates and redirects itself; with it, WAN decap forwards too.
	FastPath []string `yaml:"fastpath,omitempty"`
	Tunnels  []Tunnel `yaml:"tunnels,omitempty"`
	// Health is how grebpf run probes the tunnels; attach ignores it.
	Health Health `yaml:"health,omitempty"`
}

// Health is grebpf run's dead-peer detection: an ICMP echo to each
// tunnel's peer address through the tunnel every Interval; Misses
// unanswered in a row mark the tunnel down, one answer up again. With
// Withdraw, a tunnel's routes are taken out of the kernel while it is
// down, so a backup route or a routing daemon takes over.
type Health struct {
	Interval string `yaml:"interval,omitempty"` // a Go duration; default 1s, "0" turns probing off
	Misses   int    `yaml:"misses,omitempty"`   // default 3
	Withdraw bool   `yaml:"withdraw,omitempty"`
}

// Health defaults.
const (
	DefaultHealthInterval = time.Second
	DefaultHealthMisses   = 3
)

// Probe reads h: the interval (0: no probing) and the misses, defaults
// filled in.
func (h Health) Probe() (time.Duration, int, error) {
	interval, misses := DefaultHealthInterval, DefaultHealthMisses
	if h.Interval != "" {
		d, err := time.ParseDuration(h.Interval)
		if err != nil || d < 0 || (d > 0 && d < 10*time.Millisecond) {
			return 0, 0, fmt.Errorf("health: interval %q: use a duration of 10ms or more (1s, 500ms), or 0 for no probes", h.Interval)
		}
		interval = d
	}
	if h.Misses < 0 || h.Misses > 1000 {
		return 0, 0, fmt.Errorf("health: misses %d: use 1..1000", h.Misses)
	}
	if h.Misses > 0 {
		misses = h.Misses
	}
	return interval, misses, nil
}

// Tunnel is one GRE tunnel and the inner prefixes routed into it.
type Tunnel struct {
	Name string `yaml:"name,omitempty"`
	// Local and Remote are the outer addresses: both IPv4 (GRE over IPv4,
	// as ip_gre) or both IPv6 (GRE over IPv6, as ip6gre).
	Local  string `yaml:"local,omitempty"`
	Remote string `yaml:"remote,omitempty"`
	// EncapLimit is, over IPv6, the tunnel encapsulation limit option
	// sent (0..255) or "none"; empty means 4, as ip6gre.
	EncapLimit string `yaml:"encaplimit,omitempty"`
	// Key is the GRE key both ways; IKey and OKey set the key received
	// and the key sent apart (ip_gre's ikey, okey). Empty means none.
	Key  string `yaml:"key,omitempty"`
	IKey string `yaml:"ikey,omitempty"`
	OKey string `yaml:"okey,omitempty"`
	// TTL is the outer TTL (hop limit over IPv6), 1..255, or "inherit";
	// empty means 64.
	TTL string `yaml:"ttl,omitempty"`
	// TOS is the outer TOS (traffic class over IPv6): "inherit" (the
	// default) or a fixed value 0..255.
	TOS string `yaml:"tos,omitempty"`
	// Overlay is this side's tunnel address, Peer the other side's.
	Overlay string `yaml:"overlay,omitempty"`
	Peer    string `yaml:"peer,omitempty"`
	// Overlay6 and Peer6 are the same in IPv6, for a tunnel that carries
	// IPv6 too: both or neither.
	Overlay6 string `yaml:"overlay6,omitempty"`
	Peer6    string `yaml:"peer6,omitempty"`
	// Routes are IPv4 prefixes, and IPv6 ones on a tunnel with overlay6.
	Routes []string `yaml:"routes,omitempty"`
	// RPFilter checks decapsulated packets' sources: strict (the default),
	// loose or off.
	RPFilter string `yaml:"rp_filter,omitempty"`
	// PMTUDisc is on (the default: outer DF always set) or off (outer DF
	// copied from the inner packet), as ip_gre's pmtudisc/nopmtudisc.
	// IPv6 has no DF: over IPv6 it is always on.
	PMTUDisc string `yaml:"pmtudisc,omitempty"`
	// Seq sends sequence numbers and requires them in order; ISeq and
	// OSeq each half (ip_gre's seq, iseq, oseq).
	Seq  bool `yaml:"seq,omitempty"`
	ISeq bool `yaml:"iseq,omitempty"`
	OSeq bool `yaml:"oseq,omitempty"`
	// Csum sends GRE checksums and requires and checks them; ICsum and
	// OCsum each half (ip_gre's csum, icsum, ocsum).
	Csum  bool `yaml:"csum,omitempty"`
	ICsum bool `yaml:"icsum,omitempty"`
	OCsum bool `yaml:"ocsum,omitempty"`
}

// File is a YAML config: one router's settings at the top level, or
// several routers under sites: (one file for a whole network, each router
// attaching its own part).
type File struct {
	Router `yaml:",inline"`
	Sites  map[string]Router `yaml:"sites"`
}

// Load reads a YAML config and returns the router to attach: the top
// level, or with site the part under sites: of that name.
func Load(path, site string) (Router, error) {
	var f File
	b, err := os.ReadFile(path)
	if err != nil {
		return f.Router, fmt.Errorf("read config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return f.Router, fmt.Errorf("config %s: %v", path, err)
	}
	names := slices.Sorted(maps.Keys(f.Sites))
	switch {
	case len(f.Sites) > 0 && !reflect.ValueOf(f.Router).IsZero():
		return f.Router, fmt.Errorf("config %s: put every setting under sites: or none", path)
	case site == "" && len(f.Sites) > 0:
		return f.Router, fmt.Errorf("config %s describes sites %s: pick one with --site NAME", path, strings.Join(names, ", "))
	case site == "":
		return f.Router, nil
	case len(f.Sites) == 0:
		return f.Router, fmt.Errorf("config %s has no sites: section: drop --site %s", path, site)
	}
	r, ok := f.Sites[site]
	if !ok {
		return r, fmt.Errorf("config %s has no site %q: have %s", path, site, strings.Join(names, ", "))
	}
	return r, nil
}

// Plan is a validated router: what goes into the maps and the kernel.
type Plan struct {
	Device     string
	Mode       string
	Decap      string
	Encap      string
	XDPGeneric bool
	TC         string
	FastPath   []string
	Tunnels    []tunnel.Tunnel
	Routes     []tunnel.Route
}

// Validate checks r and turns it into a Plan. wanMTU sizes the route MTU.
// Every error names the field and what to write instead.
func (r Router) Validate(wanMTU int) (Plan, error) {
	p := Plan{Device: r.Device, Mode: r.Mode, Decap: r.Decap, Encap: r.Encap, XDPGeneric: r.XDPGeneric, TC: r.TC, FastPath: r.FastPath}
	if p.Device == "" {
		return p, fmt.Errorf("no WAN device: give --dev NAME (or device: in the config)")
	}
	if _, _, err := r.Health.Probe(); err != nil {
		return p, err
	}
	switch p.Mode {
	case "":
		p.Mode = ModeBPF
	case ModeBPF:
	case ModeKernel:
		if p.Decap != "" || p.Encap != "" || p.TC != "" || p.XDPGeneric || len(p.FastPath) > 0 {
			return p, fmt.Errorf("decap, encap, tc, xdp-generic and fastpath choose BPF attach points: drop them with mode kernel")
		}
	default:
		return p, fmt.Errorf("mode %q: use bpf or kernel", p.Mode)
	}
	switch p.Decap {
	case "":
		p.Decap = DecapAuto
	case DecapAuto, DecapXDP, DecapTC:
	default:
		return p, fmt.Errorf("decap %q: use auto, xdp or tc", p.Decap)
	}
	switch p.Encap {
	case "":
		p.Encap = EncapPeer
	case EncapPeer, EncapEgress:
	default:
		return p, fmt.Errorf("encap %q: use peer or egress", p.Encap)
	}
	switch p.TC {
	case "":
		p.TC = TCAuto
	case TCAuto, TCX, TCClsact:
	default:
		return p, fmt.Errorf("tc %q: use auto, tcx or clsact", p.TC)
	}
	if p.XDPGeneric && p.Decap == DecapTC {
		return p, fmt.Errorf("xdp-generic makes no sense with decap tc: drop one of them")
	}
	if len(p.FastPath) > 0 && p.Decap == DecapTC {
		return p, fmt.Errorf("the fast path decapsulates in XDP: drop decap tc")
	}
	for i, d := range p.FastPath {
		if d == p.Device || slices.Contains(p.FastPath[:i], d) {
			return p, fmt.Errorf("fastpath device %s: name each LAN device once, and not the WAN device", d)
		}
	}
	if len(r.Tunnels) == 0 {
		return p, fmt.Errorf("no tunnel: give --local, --remote, --overlay, --peer (or tunnels: in the config)")
	}
	names := map[string]bool{}
	type receiver struct {
		local, remote netip.Addr
		key           uint32
		keyed         bool
	}
	receivers := map[receiver]string{}
	for i, t := range r.Tunnels {
		mt, routes, err := t.plan(i+1, wanMTU)
		if err != nil {
			return p, err
		}
		if names[mt.Name] {
			return p, fmt.Errorf("tunnel name %q used twice: give each tunnel its own name", mt.Name)
		}
		names[mt.Name] = true
		rx := receiver{local: mt.Local, remote: mt.Remote, keyed: mt.IKey != nil}
		if rx.keyed {
			rx.key = *mt.IKey
		}
		if (mt.OSeq || mt.OCsum) && p.Encap == EncapEgress {
			return p, fmt.Errorf("tunnel %s: oseq and ocsum work per packet, and on the interface's egress encap sees packets before the kernel segments them: use encap peer", mt.Name)
		}
		if other, dup := receivers[rx]; dup {
			return p, fmt.Errorf("tunnels %s and %s both receive %s → %s with the same key: give each tunnel between two endpoints its own ikey", other, mt.Name, mt.Remote, mt.Local)
		}
		receivers[rx] = mt.Name
		p.Tunnels = append(p.Tunnels, mt)
		p.Routes = append(p.Routes, routes...)
	}
	if err := checkOverlaps(p); err != nil {
		return p, err
	}
	return p, nil
}

func parseAddr(field, name, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return a, fmt.Errorf("tunnel %s: %s %q is not an IPv4 address (e.g. 10.0.0.1)", name, field, s)
	}
	return a, nil
}

// parseOuterAddr reads an outer address: IPv4, or an IPv6 address a
// tunnel can run between (one host's, beyond its link).
func parseOuterAddr(field, name, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err == nil && a.Is4() {
		return a, nil
	}
	if err != nil || a.Zone() != "" || a.Is4In6() || a.IsLinkLocalUnicast() || a.IsMulticast() || a.IsUnspecified() || a.IsLoopback() {
		return a, fmt.Errorf("tunnel %s: %s %q is not an IPv4 address or a global or unique-local IPv6 one (e.g. 10.0.0.1, 2001:db8::1)", name, field, s)
	}
	return a, nil
}

// MaxNameLen leaves room for the "p" of the interface's veth peer in
// the kernel's 15-character device names.
const MaxNameLen = 14

func (t Tunnel) plan(pos int, wanMTU int) (tunnel.Tunnel, []tunnel.Route, error) {
	mt := tunnel.Tunnel{Name: t.Name, TTL: DefaultTTL, TOSInherit: true}
	if mt.Name == "" {
		mt.Name = fmt.Sprintf("gre%d", pos)
	}
	if len(mt.Name) > MaxNameLen || strings.ContainsAny(mt.Name, " \t/:") {
		return mt, nil, fmt.Errorf("tunnel name %q: use at most %d characters, no spaces, colons or slashes", mt.Name, MaxNameLen)
	}
	var err error
	for _, f := range []struct {
		field string
		val   string
		dst   *netip.Addr
	}{
		{"local", t.Local, &mt.Local},
		{"remote", t.Remote, &mt.Remote},
		{"overlay", t.Overlay, &mt.OverlayLocal},
		{"peer", t.Peer, &mt.OverlayRemote},
	} {
		if f.val == "" {
			return mt, nil, fmt.Errorf("tunnel %s: missing %s address: give --%s A.B.C.D", mt.Name, f.field, f.field)
		}
		parse := parseAddr
		if f.field == "local" || f.field == "remote" {
			parse = parseOuterAddr
		}
		if *f.dst, err = parse(f.field, mt.Name, f.val); err != nil {
			return mt, nil, err
		}
	}
	if mt.Local.Is6() != mt.Remote.Is6() {
		return mt, nil, fmt.Errorf("tunnel %s: local %s and remote %s are of different families: give two IPv4 or two IPv6 addresses", mt.Name, mt.Local, mt.Remote)
	}
	if mt.Local == mt.Remote || mt.OverlayLocal == mt.OverlayRemote {
		return mt, nil, fmt.Errorf("tunnel %s: both ends have the same address: check local/remote and overlay/peer", mt.Name)
	}
	if (t.Overlay6 == "") != (t.Peer6 == "") {
		return mt, nil, fmt.Errorf("tunnel %s: give both overlay6 and peer6 (this side's and the peer's IPv6 tunnel addresses), or neither", mt.Name)
	}
	if t.Overlay6 != "" {
		for _, f := range []struct {
			field, val string
			dst        *netip.Addr
		}{{"overlay6", t.Overlay6, &mt.Overlay6Local}, {"peer6", t.Peer6, &mt.Overlay6Remote}} {
			a, err := netip.ParseAddr(f.val)
			if err != nil || !a.Is6() || a.Is4In6() || a.IsLinkLocalUnicast() || a.IsMulticast() || a.IsUnspecified() || a.IsLoopback() {
				return mt, nil, fmt.Errorf("tunnel %s: %s %q is not a global or unique-local IPv6 address (e.g. fd00:1::1)", mt.Name, f.field, f.val)
			}
			*f.dst = a
		}
		if mt.Overlay6Local == mt.Overlay6Remote {
			return mt, nil, fmt.Errorf("tunnel %s: both ends have the same address: check overlay6/peer6", mt.Name)
		}
	}
	ikey, okey := t.IKey, t.OKey
	if t.Key != "" {
		if ikey != "" || okey != "" {
			return mt, nil, fmt.Errorf("tunnel %s: give key, or ikey and okey, not both", mt.Name)
		}
		ikey, okey = t.Key, t.Key
	}
	for _, k := range []struct {
		field, val string
		dst        **uint32
	}{{"ikey", ikey, &mt.IKey}, {"okey", okey, &mt.OKey}} {
		if k.val == "" {
			continue
		}
		v, err := strconv.ParseUint(k.val, 0, 32)
		if err != nil {
			field := k.field
			if t.Key != "" {
				field = "key"
			}
			return mt, nil, fmt.Errorf("tunnel %s: %s %q: use a number 0..4294967295", mt.Name, field, k.val)
		}
		v32 := uint32(v)
		*k.dst = &v32
	}
	switch t.TTL {
	case "":
	case "inherit":
		mt.TTL = 0
	default:
		v, err := strconv.ParseUint(t.TTL, 10, 8)
		if err != nil || v == 0 {
			return mt, nil, fmt.Errorf("tunnel %s: ttl %q: use 1..255 or inherit", mt.Name, t.TTL)
		}
		mt.TTL = uint8(v)
	}
	switch t.TOS {
	case "", "inherit":
	default:
		v, err := strconv.ParseUint(t.TOS, 0, 8)
		if err != nil {
			return mt, nil, fmt.Errorf("tunnel %s: tos %q: use inherit or 0..255", mt.Name, t.TOS)
		}
		mt.TOSInherit = false
		mt.TOS = uint8(v)
	}
	switch {
	case !mt.Local.Is6():
		if t.EncapLimit != "" {
			return mt, nil, fmt.Errorf("tunnel %s: encaplimit is for a tunnel over IPv6 (ip6gre): drop it, or give IPv6 local and remote addresses", mt.Name)
		}
	case t.EncapLimit == "":
		mt.EncapLimit = DefaultEncapLimit
	case t.EncapLimit == "none":
		mt.EncapLimit = -1
	default:
		v, err := strconv.ParseUint(t.EncapLimit, 10, 8)
		if err != nil {
			return mt, nil, fmt.Errorf("tunnel %s: encaplimit %q: use 0..255 or none", mt.Name, t.EncapLimit)
		}
		mt.EncapLimit = int(v)
	}
	mt.ISeq, mt.OSeq = t.Seq || t.ISeq, t.Seq || t.OSeq
	mt.ICsum, mt.OCsum = t.Csum || t.ICsum, t.Csum || t.OCsum
	switch t.PMTUDisc {
	case "", "on":
	case "off":
		if mt.Local.Is6() {
			return mt, nil, fmt.Errorf("tunnel %s: pmtudisc off: IPv6 has no DF bit to copy, and a tunnel over IPv6 always does path MTU discovery, as ip6gre: drop it", mt.Name)
		}
		if mt.TTL != 0 {
			return mt, nil, fmt.Errorf("tunnel %s: pmtudisc off needs ttl inherit: a fixed TTL always does path MTU discovery, as with ip_gre", mt.Name)
		}
		mt.NoPMTUDisc = true
	default:
		return mt, nil, fmt.Errorf("tunnel %s: pmtudisc %q: use on or off", mt.Name, t.PMTUDisc)
	}
	if t.RPFilter != "" {
		if mt.RPFilter, err = tunnel.ParseRPFilter(t.RPFilter); err != nil {
			return mt, nil, fmt.Errorf("tunnel %s: %v", mt.Name, err)
		}
	}
	mtu := wanMTU - mt.Overhead()
	if mtu < 576 {
		return mt, nil, fmt.Errorf("tunnel %s: WAN MTU %d leaves %d for the tunnel; raise the WAN MTU to at least %d", mt.Name, wanMTU, mtu, 576+mt.Overhead())
	}
	mt.MTU = uint16(mtu)

	// The peer's overlay address needs no route here: the interface's
	// point-to-point address routes it, as on an ip_gre device.
	var routes []tunnel.Route
	for _, s := range t.Routes {
		pfx, err := netip.ParsePrefix(s)
		if err != nil || pfx.Addr().Is4In6() || pfx.Addr().Zone() != "" {
			return mt, nil, fmt.Errorf("tunnel %s: route %q is not an IPv4 or IPv6 prefix (e.g. 172.16.200.0/24, 2001:db8:200::/64)", mt.Name, s)
		}
		if pfx.Addr().Is6() && !mt.CarriesIPv6() {
			return mt, nil, fmt.Errorf("tunnel %s: route %s is IPv6: give the tunnel IPv6 addresses too (--overlay6, --peer6)", mt.Name, pfx)
		}
		if pfx != pfx.Masked() {
			return mt, nil, fmt.Errorf("tunnel %s: route %s has host bits set: did you mean %s?", mt.Name, pfx, pfx.Masked())
		}
		routes = append(routes, tunnel.Route{Prefix: pfx, Tunnel: mt.Name})
	}
	return mt, routes, nil
}

// checkOverlaps refuses prefixes that overlap each other: an overlap
// almost always means a typo. Sorted by start address (shorter first), two
// prefixes overlap only if neighbours do, so this is O(n log n) for the
// 100,000-route case. Whether a route would carry a tunnel's own remote
// depends on the kernel's other routes: the kernel side checks that.
func checkOverlaps(p Plan) error {
	rs := slices.Clone(p.Routes)
	slices.SortFunc(rs, func(a, b tunnel.Route) int {
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return a.Prefix.Bits() - b.Prefix.Bits()
	})
	for i := 1; i < len(rs); i++ {
		if rs[i-1].Prefix.Overlaps(rs[i].Prefix) {
			return fmt.Errorf("route %s overlaps route %s: remove one or make them disjoint", rs[i-1].Prefix, rs[i].Prefix)
		}
	}
	return nil
}
