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

// Lab is the shape of the lab.
type Lab struct {
	Sites    int
	Topology string
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
	return nil
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

// WANAddr is the router's WAN address; WANGateway the WAN router's.
func (s Site) WANAddr() netip.Addr    { return netip.AddrFrom4([4]byte{10, s.octet(), 0, 1}) }
func (s Site) WANGateway() netip.Addr { return netip.AddrFrom4([4]byte{10, s.octet(), 0, 254}) }

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
		var routes []string
		for _, o := range l.SiteList() {
			if o == far || (l.Topology == TopologyHub && s != 1 && o != s) {
				routes = append(routes, o.LAN().String())
			}
		}
		// A spoke also routes the other spokes' overlay addresses to the
		// hub: their ICMP errors (traceroute's hops) come from them, and
		// the inner source check wants a route back.
		if l.Topology == TopologyHub && s != 1 {
			for _, o := range l.Links() {
				if o.B != s {
					routes = append(routes, netip.PrefixFrom(o.Overlay(o.B), 32).String())
				}
			}
		}
		r.Tunnels = append(r.Tunnels, config.Tunnel{Name: k.Name(),
			Local: s.WANAddr().String(), Remote: far.WANAddr().String(),
			Overlay: k.Overlay(s).String(), Peer: k.Overlay(far).String(), Routes: routes})
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
	return strings.Join(parts, ", ") + " - wan" + shape
}

// topology is the lab without a tunnel, as ip(8) commands. The WAN router
// blackholes private space, so nothing crosses it unencapsulated:
// traceroute shows * * * there.
func (l Lab) topology() [][]string {
	cmds := [][]string{{"-n", "wan", "link", "set", "lo", "up"}}
	for _, s := range l.SiteList() {
		h, r, w := s.Host(), s.Router(), s.WANDevice()
		cmds = append(cmds,
			[]string{"link", "add", "eth0", "netns", h, "type", "veth", "peer", "name", h, "netns", r},
			[]string{"link", "add", w, "netns", r, "type", "veth", "peer", "name", r, "netns", "wan"},
			[]string{"-n", h, "addr", "add", s.HostAddr().String() + "/24", "dev", "eth0"},
			[]string{"-n", r, "addr", "add", s.RouterLAN().String() + "/24", "dev", h},
			[]string{"-n", r, "addr", "add", s.WANAddr().String() + "/24", "dev", w},
			[]string{"-n", "wan", "addr", "add", s.WANGateway().String() + "/24", "dev", r},
			[]string{"-n", h, "link", "set", "lo", "up"}, []string{"-n", h, "link", "set", "eth0", "up"},
			[]string{"-n", r, "link", "set", "lo", "up"}, []string{"-n", r, "link", "set", h, "up"},
			[]string{"-n", r, "link", "set", w, "up"}, []string{"-n", "wan", "link", "set", r, "up"},
			[]string{"-n", h, "route", "add", "default", "via", s.RouterLAN().String()},
			[]string{"-n", r, "route", "add", "default", "via", s.WANGateway().String()},
		)
	}
	return append(cmds,
		[]string{"-n", "wan", "route", "add", "blackhole", "172.16.0.0/12"},
		[]string{"-n", "wan", "route", "add", "blackhole", "192.168.0.0/16"})
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
		if err := inNS(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
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
