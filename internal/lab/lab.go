// Package lab builds the reference site-to-site scenario in network
// namespaces: N sites (2 by default: the seed's r1 and r2), each a LAN host
// behind a router, the routers on either side of a WAN router, and a
// tunnel between sites (none, grebpf or ip_gre) in a mesh or a hub. Its
// topology and router configs are defined here once, for lab up, bench,
// the tests and the demo.
package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	"github.com/grebpf/grebpf/internal/config"
	"github.com/grebpf/grebpf/internal/netns"
	"github.com/grebpf/grebpf/loader"
)

// Tunnel modes: none, or a backend's mode.
const (
	TunnelNone   = "none"
	TunnelBPF    = config.ModeBPF
	TunnelKernel = config.ModeKernel
)

// Topologies: a tunnel between every pair of sites, or r1 as the hub
// through which the spokes reach each other.
const (
	TopologyMesh = "mesh"
	TopologyHub  = "hub"
)

// MaxSites keeps every site's numbers distinct and every name short.
const MaxSites = 8

// WAN families: the seed's IPv4 WAN (GRE over IPv4, as ip_gre), or an
// IPv6 one (GRE over IPv6, as ip6gre).
const (
	WANIPv4 = "ipv4"
	WANIPv6 = "ipv6"
)

// Lab is the shape of the lab.
type Lab struct {
	Sites    int
	Topology string
	// WAN is the WAN's family, WANIPv4 when empty.
	WAN string
}

// Default is the seed scenario: two sites, one tunnel.
var Default = Lab{Sites: 2, Topology: TopologyMesh}

// Check says what is wrong with the shape, naming the fix.
func (l Lab) Check() error {
	if l.Sites < 2 || l.Sites > MaxSites {
		return fmt.Errorf("sites %d: use 2..%d", l.Sites, MaxSites)
	}
	if l.Topology != TopologyMesh && l.Topology != TopologyHub {
		return fmt.Errorf("topology %q: use mesh or hub", l.Topology)
	}
	if l.WAN != "" && l.WAN != WANIPv4 && l.WAN != WANIPv6 {
		return fmt.Errorf("wan %q: use ipv4 or ipv6", l.WAN)
	}
	return nil
}

// ipv6WAN says whether the WAN is IPv6.
func (l Lab) ipv6WAN() bool { return l.WAN == WANIPv6 }

// WANAddr is site s's router's WAN address in the lab's WAN family.
func (l Lab) WANAddr(s Site) netip.Addr {
	if l.ipv6WAN() {
		return s.WANAddr6()
	}
	return s.WANAddr()
}

// Site is site k (1-based): host namespace lanK behind router rK.
type Site int

// octet numbers the site's LAN and WAN: 100 and 200 for the seed's two
// sites, 147+k after them (site 3 is 172.16.150.0/24 and 10.150.0.0/24).
func (s Site) octet() byte {
	switch s {
	case 1:
		return 100
	case 2:
		return 200
	}
	return byte(147 + s)
}

// Router is the router's namespace.
func (s Site) Router() string { return "r" + strconv.Itoa(int(s)) }

// Host is the LAN host's namespace, and the router's LAN device.
func (s Site) Host() string { return "lan" + strconv.Itoa(int(s)) }

// WANDevice is the router's WAN device (the WAN router's side is named
// after the router).
func (s Site) WANDevice() string { return "wan" + strconv.Itoa(int(s)) }

// LAN is the site's LAN prefix.
func (s Site) LAN() netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16, s.octet(), 0}), 24)
}

// HostAddr is the LAN host's address; RouterLAN the router's on the LAN.
func (s Site) HostAddr() netip.Addr  { return netip.AddrFrom4([4]byte{172, 16, s.octet(), 1}) }
func (s Site) RouterLAN() netip.Addr { return netip.AddrFrom4([4]byte{172, 16, s.octet(), 254}) }

// LAN6 is the site's IPv6 LAN prefix: 2001:db8:100::/64 for site 1, the
// IPv4 LAN's third octet written as the third group.
func (s Site) LAN6() netip.Prefix {
	return netip.MustParsePrefix(fmt.Sprintf("2001:db8:%d::/64", s.octet()))
}

// HostAddr6 and RouterLAN6 are the host's and the router's IPv6 LAN
// addresses (::1 and ::254).
func (s Site) HostAddr6() netip.Addr  { return s.lan6(1) }
func (s Site) RouterLAN6() netip.Addr { return s.lan6(0x254) }

func (s Site) lan6(low uint16) netip.Addr {
	b := s.LAN6().Addr().As16()
	b[14], b[15] = byte(low>>8), byte(low)
	return netip.AddrFrom16(b)
}

// WANAddr is the router's WAN address; WANGateway the WAN router's.
func (s Site) WANAddr() netip.Addr    { return netip.AddrFrom4([4]byte{10, s.octet(), 0, 1}) }
func (s Site) WANGateway() netip.Addr { return netip.AddrFrom4([4]byte{10, s.octet(), 0, 254}) }

// WANAddr6 and WANGateway6 are the same on an IPv6 WAN:
// 2001:db8:ffff:100::1 and ::254 for site 1, the IPv4 WAN's second octet
// written as the fourth group.
func (s Site) WANAddr6() netip.Addr    { return s.wan6("1") }
func (s Site) WANGateway6() netip.Addr { return s.wan6("254") }

func (s Site) wan6(low string) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("2001:db8:ffff:%d::%s", s.octet(), low))
}

// SiteList lists the lab's sites in order.
func (l Lab) SiteList() []Site {
	var s []Site
	for k := 1; k <= l.Sites; k++ {
		s = append(s, Site(k))
	}
	return s
}

// Link is a tunnel between sites A < B. Its number N names it on both
// routers (greN) and its overlay: 192.168.N.1 on A, 192.168.N.2 on B.
type Link struct {
	A, B Site
	N    int
}

// Name is the tunnel's name (its interface) on both routers.
func (k Link) Name() string { return "gre" + strconv.Itoa(k.N) }

// Overlay is site s's tunnel address on this link.
func (k Link) Overlay(s Site) netip.Addr {
	end := byte(1)
	if s == k.B {
		end = 2
	}
	return netip.AddrFrom4([4]byte{192, 168, byte(k.N), end})
}

// Overlay6 is site s's IPv6 tunnel address on this link: fd00:N::1 on A,
// fd00:N::2 on B.
func (k Link) Overlay6(s Site) netip.Addr {
	end := "1"
	if s == k.B {
		end = "2"
	}
	return netip.MustParseAddr(fmt.Sprintf("fd00:%x::%s", k.N, end))
}

// Links lists the tunnels. Pairs are numbered in the mesh's order (1-2,
// 1-3, …, 2-3, …); the hub keeps the pairs with r1, so its numbers are the
// mesh's too, and two sites give the seed's gre1 either way.
func (l Lab) Links() []Link {
	var links []Link
	n := 0
	for a := 1; a <= l.Sites; a++ {
		for b := a + 1; b <= l.Sites; b++ {
			n++
			if l.Topology == TopologyHub && a != 1 {
				continue
			}
			links = append(links, Link{Site(a), Site(b), n})
		}
	}
	return links
}

// Router is site s's grebpf configuration: a tunnel per link, carrying the
// LAN of the site at its other end; a spoke's one tunnel to the hub
// carries every other site's LAN.
func (l Lab) Router(s Site) config.Router {
	r := config.Router{Device: s.WANDevice()}
	for _, k := range l.Links() {
		if k.A != s && k.B != s {
			continue
		}
		far := k.A
		if far == s {
			far = k.B
		}
		var routes, routes6 []string
		for _, o := range l.SiteList() {
			if o == far || (l.Topology == TopologyHub && s != 1 && o != s) {
				routes = append(routes, o.LAN().String())
				routes6 = append(routes6, o.LAN6().String())
			}
		}
		// A spoke also routes the other spokes' overlay addresses to the
		// hub: their ICMP errors (traceroute's hops) come from them, and
		// the inner source check wants a route back.
		if l.Topology == TopologyHub && s != 1 {
			for _, o := range l.Links() {
				if o.B != s {
					routes = append(routes, netip.PrefixFrom(o.Overlay(o.B), 32).String())
					routes6 = append(routes6, netip.PrefixFrom(o.Overlay6(o.B), 128).String())
				}
			}
		}
		r.Tunnels = append(r.Tunnels, config.Tunnel{Name: k.Name(),
			Local: l.WANAddr(s).String(), Remote: l.WANAddr(far).String(),
			Overlay: k.Overlay(s).String(), Peer: k.Overlay(far).String(),
			Overlay6: k.Overlay6(s).String(), Peer6: k.Overlay6(far).String(),
			Routes: append(routes, routes6...)})
	}
	return r
}

// Config is one file describing every router (attach --config F --site rK).
func (l Lab) Config() config.File {
	f := config.File{Sites: map[string]config.Router{}}
	for _, s := range l.SiteList() {
		f.Sites[s.Router()] = l.Router(s)
	}
	return f
}

// Namespaces lists the lab's namespaces in build order.
func (l Lab) Namespaces() []string {
	ns := []string{"wan"}
	for _, s := range l.SiteList() {
		ns = append(ns, s.Host(), s.Router())
	}
	return ns
}

// String draws the lab in one line.
func (l Lab) String() string {
	var parts []string
	for _, s := range l.SiteList() {
		parts = append(parts, fmt.Sprintf("%s %s - %s", s.Host(), s.HostAddr(), s.Router()))
	}
	shape := ""
	if l.Sites > 2 {
		shape = fmt.Sprintf(" (%d sites, %s)", l.Sites, l.Topology)
	}
	wan := " - wan"
	if l.ipv6WAN() {
		wan = " - wan (IPv6)"
	}
	return strings.Join(parts, ", ") + wan + shape
}

// topology is the lab without a tunnel, as ip(8) commands. The WAN router
// blackholes private and documentation space, so nothing crosses it
// unencapsulated: traceroute shows * * * there. The WAN is IPv4 or IPv6;
// the LANs are dual-stack, and what is not of the WAN's family has no way
// across but the tunnels.
func (l Lab) topology() [][]string {
	cmds := [][]string{{"-n", "wan", "link", "set", "lo", "up"}}
	for _, s := range l.SiteList() {
		h, r, w := s.Host(), s.Router(), s.WANDevice()
		cmds = append(cmds,
			[]string{"link", "add", "eth0", "netns", h, "type", "veth", "peer", "name", h, "netns", r},
			[]string{"link", "add", w, "netns", r, "type", "veth", "peer", "name", r, "netns", "wan"},
			[]string{"-n", h, "addr", "add", s.HostAddr().String() + "/24", "dev", "eth0"},
			[]string{"-n", r, "addr", "add", s.RouterLAN().String() + "/24", "dev", h},
			[]string{"-n", h, "link", "set", "lo", "up"}, []string{"-n", h, "link", "set", "eth0", "up"},
			[]string{"-n", r, "link", "set", "lo", "up"}, []string{"-n", r, "link", "set", h, "up"},
			[]string{"-n", r, "link", "set", w, "up"}, []string{"-n", "wan", "link", "set", r, "up"},
			[]string{"-n", h, "route", "add", "default", "via", s.RouterLAN().String()},
			[]string{"-n", h, "addr", "add", s.HostAddr6().String() + "/64", "dev", "eth0"},
			[]string{"-n", r, "addr", "add", s.RouterLAN6().String() + "/64", "dev", h},
			[]string{"-n", h, "-6", "route", "add", "default", "via", s.RouterLAN6().String()},
		)
		if l.ipv6WAN() {
			cmds = append(cmds,
				[]string{"-n", r, "addr", "add", s.WANAddr6().String() + "/64", "dev", w},
				[]string{"-n", "wan", "addr", "add", s.WANGateway6().String() + "/64", "dev", r},
				[]string{"-n", r, "-6", "route", "add", "default", "via", s.WANGateway6().String()})
		} else {
			cmds = append(cmds,
				[]string{"-n", r, "addr", "add", s.WANAddr().String() + "/24", "dev", w},
				[]string{"-n", "wan", "addr", "add", s.WANGateway().String() + "/24", "dev", r},
				[]string{"-n", r, "route", "add", "default", "via", s.WANGateway().String()})
		}
	}
	return append(cmds,
		[]string{"-n", "wan", "route", "add", "blackhole", "172.16.0.0/12"},
		[]string{"-n", "wan", "route", "add", "blackhole", "192.168.0.0/16"},
		[]string{"-n", "wan", "-6", "route", "add", "blackhole", "fc00::/7"},
		[]string{"-n", "wan", "-6", "route", "add", "blackhole", "2001:db8::/32"})
}

// RouteLANsOnWAN lets the WAN router route the LANs: no tunnel needed,
// the baseline bench modes compare against.
func (l Lab) RouteLANsOnWAN() error {
	for _, s := range l.SiteList() {
		if err := ip("-n", "wan", "route", "replace", s.LAN().String(), "via", s.WANAddr().String()); err != nil {
			return err
		}
	}
	return nil
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %s", strings.Join(args, " "), strings.TrimSpace(string(out)))
	}
	return nil
}

func inNS(ns string, args ...string) error {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s in %s: %s", strings.Join(args, " "), ns, strings.TrimSpace(string(out)))
	}
	return nil
}

// Up builds the lab with the given tunnel; with fastPath the veths are
// prepared for the XDP fast path, and a bpf tunnel uses it. A partial lab
// is torn down.
func (l Lab) Up(tunnel string, fastPath bool) (err error) {
	if err := l.Check(); err != nil {
		return err
	}
	switch tunnel {
	case TunnelNone, TunnelBPF:
	case TunnelKernel:
		if fastPath {
			return errors.New("the fast path is grebpf's: use --tunnel bpf or none with --fastpath")
		}
		if !loader.HaveIPGRE() {
			return errors.New("this kernel has no ip_gre (modprobe ip_gre fails): use --tunnel bpf, or run it in a VM with make test-vm")
		}
		if l.ipv6WAN() && !loader.HaveIP6GRE() {
			return errors.New("this kernel has no ip6gre (modprobe ip6_gre fails): use --tunnel bpf, or run it in a VM with make test-vm")
		}
	default:
		return fmt.Errorf("tunnel %q: use none, bpf or kernel", tunnel)
	}
	for _, ns := range (Lab{Sites: MaxSites}).Namespaces() {
		if netns.Exists(ns) {
			return fmt.Errorf("namespace %s already exists: run grebpf lab down first", ns)
		}
	}
	defer func() {
		if err != nil {
			Down()
		}
	}()
	for _, ns := range l.Namespaces() {
		if err := ip("netns", "add", ns); err != nil {
			return err
		}
		// No duplicate address detection on the devices to come: the lab
		// has no one to collide with, and a link-local address still
		// tentative holds up the first IPv6 packets for a second or two.
		if err := inNS(ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"); err != nil {
			return err
		}
	}
	for _, args := range l.topology() {
		if err := ip(args...); err != nil {
			return err
		}
	}
	for _, ns := range l.Namespaces() {
		if strings.HasPrefix(ns, "lan") {
			continue
		}
		if err := inNS(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"); err != nil {
			return err
		}
	}
	if fastPath {
		// What veths need for the XDP fast path, where a real wire does
		// not: NAPI on the peer of every device XDP redirects into (GRO on
		// gives it), and complete checksums from every sender: an XDP
		// redirect drops the partial-checksum state a veth sender leaves,
		// and so does the WAN router's when it forwards what its GRO
		// merged (TCP through XDP forwarding on the routers arrived with
		// bad checksums until its veths computed them: tx off, as a wire
		// would carry them).
		for _, s := range l.SiteList() {
			if err := inNS("wan", "ethtool", "-K", s.Router(), "gro", "on", "tx", "off"); err != nil {
				return err
			}
			if err := inNS(s.Host(), "ethtool", "-K", "eth0", "gro", "on", "tx", "off"); err != nil {
				return err
			}
		}
	}
	if tunnel == TunnelNone {
		return nil
	}
	return l.Attach(tunnel, func(s Site, cfg *config.Router) {
		if fastPath {
			cfg.FastPath = []string{s.Host()}
		}
	})
}

// Attach attaches every router's tunnels with grebpf (bpf) or ip_gre
// (kernel), each router's config passed through edit first. The last site
// first: a router's peers decapsulate before it starts encapsulating.
func (l Lab) Attach(tunnel string, edit func(Site, *config.Router)) error {
	sites := l.SiteList()
	slices.Reverse(sites)
	for _, s := range sites {
		cfg := l.Router(s)
		if edit != nil {
			edit(s, &cfg)
		}
		cfg.Mode = tunnel
		r := s.Router()
		err := netns.Do(r, func() error {
			_, err := loader.AttachWith(r, cfg)
			return err
		})
		if err != nil {
			return fmt.Errorf("attach in %s: %w", r, err)
		}
	}
	return nil
}

// Down detaches any grebpf data plane in the lab and deletes its
// namespaces, whatever the number of sites. Missing pieces are fine.
func Down() error {
	var errs []error
	all := Lab{Sites: MaxSites}.Namespaces()
	// Every detach before any namespace goes: deleting one namespace
	// destroys its veths' peers in the others a moment later, and a detach
	// that finds its device half gone fails (seen on 6.1: r2's wan2 went
	// with the wan namespace).
	for _, ns := range all {
		if !netns.Exists(ns) {
			continue
		}
		errs = append(errs, netns.Do(ns, func() error {
			if _, err := loader.DetachWith(ns); !errors.Is(err, loader.ErrNotAttached) {
				return err
			}
			return nil
		}))
	}
	for _, ns := range all {
		if netns.Exists(ns) {
			errs = append(errs, ip("netns", "del", ns))
		}
	}
	return errors.Join(errs...)
}
