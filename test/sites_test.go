package test

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/grebpf/grebpf/internal/lab"
)

// wantHops is what traceroute from site a's host to site b's shows: a's
// router, then the overlay address of each router the packet enters
// through a tunnel (the hub's, in transit), then b's host.
func wantHops(l lab.Lab, a, b lab.Site) []string {
	link := func(x, y lab.Site) lab.Link {
		for _, k := range l.Links() {
			if (k.A == x && k.B == y) || (k.A == y && k.B == x) {
				return k
			}
		}
		panic("no link")
	}
	hops := []string{a.RouterLAN().String()}
	if l.Topology == lab.TopologyHub && a != 1 && b != 1 {
		hops = append(hops, link(a, 1).Overlay(1).String())
		hops = append(hops, link(1, b).Overlay(b).String())
	} else {
		hops = append(hops, link(a, b).Overlay(b).String())
	}
	return append(hops, b.HostAddr().String())
}

// checkSites traceroutes between every ordered pair of sites, then runs
// TCP between two sites whose path is longest (through the hub in a hub).
func checkSites(t *testing.T, l lab.Lab) {
	t.Helper()
	for _, a := range l.SiteList() {
		for _, b := range l.SiteList() {
			if a == b {
				continue
			}
			want := wantHops(l, a, b)
			if got := traceroute(t, a.Host(), b.HostAddr().String(), 6); !slices.Equal(got, want) {
				t.Errorf("traceroute %s → %s: %v, want %v", a.Host(), b.Host(), got, want)
			}
		}
	}
	from, to := lab.Site(2), lab.Site(l.Sites)
	gbps, retr := iperfBetween(t, from.Host(), to.Host(), to.HostAddr().String(), 2)
	t.Logf("iperf3 TCP %s → %s (%d sites, %s): %.2f Gbit/s, %d retransmits", from.Host(), to.Host(), l.Sites, l.Topology, gbps, retr)
	if gbps == 0 {
		t.Errorf("TCP %s → %s carried nothing", from.Host(), to.Host())
	}
}

// N sites built by lab up, in a mesh and around a hub, through grebpf
// (TC and the XDP fast path) and ip_gre: every pair reaches every other
// with the hops the topology implies, spoke to spoke through the hub.
func TestSites(t *testing.T) {
	for _, c := range []struct {
		lab      lab.Lab
		tunnel   string
		fastPath bool
	}{
		{lab.Lab{Sites: 3, Topology: lab.TopologyMesh}, "bpf", false},
		{lab.Lab{Sites: 4, Topology: lab.TopologyHub}, "bpf", false},
		{lab.Lab{Sites: 3, Topology: lab.TopologyHub}, "bpf", true},
		{lab.Lab{Sites: 3, Topology: lab.TopologyMesh}, "bpf", true},
		{lab.Lab{Sites: 3, Topology: lab.TopologyHub}, "kernel", false},
		{lab.Lab{Sites: 3, Topology: lab.TopologyMesh}, "kernel", false},
	} {
		args := []string{"lab", "up", "--sites", strconv.Itoa(c.lab.Sites), "--topology", c.lab.Topology, "--tunnel", c.tunnel}
		name := strconv.Itoa(c.lab.Sites) + "-" + c.lab.Topology + "-" + c.tunnel
		if c.fastPath {
			args = append(args, "--fastpath")
			name += "-fastpath"
		}
		t.Run(name, func(t *testing.T) {
			if c.tunnel == "kernel" {
				needIPGRE(t)
			}
			execute(t, grebpfBin, "lab", "down")
			grebpf(t, args...)
			t.Cleanup(func() { grebpf(t, "lab", "down") })
			checkSites(t, c.lab)
		})
	}
}

// One YAML file for every site, as lab config writes it: each router
// attaches its own part with --site, and the hub works as lab up builds it.
func TestSitesConfig(t *testing.T) {
	l := lab.Lab{Sites: 3, Topology: lab.TopologyHub}
	execute(t, grebpfBin, "lab", "down")
	grebpf(t, "lab", "up", "--sites", "3", "--topology", "hub")
	t.Cleanup(func() { grebpf(t, "lab", "down") })
	file := filepath.Join(t.TempDir(), "sites.yaml")
	mustDo(t, os.WriteFile(file, []byte(grebpf(t, "lab", "config", "--sites", "3", "--topology", "hub")), 0o600))
	for _, r := range []string{"r3", "r2", "r1"} {
		grebpf(t, "--netns", r, "attach", "--config", file, "--site", r)
	}
	if got := strings.Fields(in(t, "r2", "ip", "-br", "link", "show", "gre1"))[0]; got != "gre1@gre1p" {
		t.Errorf("r2's tunnel interface: %q", got)
	}
	checkSites(t, l)
	refused(t, `has no site "r9": have r1, r2, r3`, "--netns", "r1", "attach", "--config", file, "--site", "r9")
	refused(t, "describes sites r1, r2, r3: pick one with --site NAME", "--netns", "r1", "attach", "--config", file)
}
