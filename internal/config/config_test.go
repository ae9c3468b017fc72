package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/grebpf/grebpf/internal/tunnel"
)

func r1() Router {
	return Router{Device: "wan1", Tunnels: []Tunnel{{Name: "gre1", Local: "10.100.0.1", Remote: "10.200.0.1",
		Overlay: "192.168.1.1", Peer: "192.168.1.2", Routes: []string{"172.16.200.0/24"}}}}
}

func TestValidateDefaults(t *testing.T) {
	p, err := r1().Validate(1500)
	if err != nil {
		t.Fatal(err)
	}
	if p.Decap != DecapAuto || p.TC != TCAuto {
		t.Errorf("decap %q tc %q", p.Decap, p.TC)
	}
	tun := p.Tunnels[0]
	if tun.TTL != 64 || !tun.TOSInherit || tun.IKey != nil || tun.OKey != nil || tun.MTU != 1476 || tun.Name != "gre1" {
		t.Errorf("tunnel %+v", tun)
	}
	if tun.RPFilter != tunnel.RPStrict {
		t.Errorf("rp_filter %s, want strict by default", tun.RPFilter)
	}
	// The peer's overlay address is the interface's own business.
	if len(p.Routes) != 1 || p.Routes[0] != (tunnel.Route{Prefix: netip.MustParsePrefix("172.16.200.0/24"), Tunnel: "gre1"}) {
		t.Errorf("routes %v, want 172.16.200.0/24 into gre1", p.Routes)
	}
}

func TestValidateKeyedMTU(t *testing.T) {
	r := r1()
	r.Tunnels[0].Key = "42"
	r.Tunnels[0].TTL = "inherit"
	r.Tunnels[0].TOS = "0x20"
	p, err := r.Validate(1500)
	if err != nil {
		t.Fatal(err)
	}
	tun := p.Tunnels[0]
	if tun.MTU != 1472 || *tun.IKey != 42 || *tun.OKey != 42 || tun.TTL != 0 || tun.TOSInherit || tun.TOS != 0x20 {
		t.Errorf("tunnel %+v", tun)
	}
}

func TestValidateDualStack(t *testing.T) {
	r := r1()
	r.Tunnels[0].Overlay6, r.Tunnels[0].Peer6 = "fd00:1::1", "fd00:1::2"
	r.Tunnels[0].Routes = append(r.Tunnels[0].Routes, "2001:db8:200::/64")
	p, err := r.Validate(1500)
	if err != nil {
		t.Fatal(err)
	}
	tun := p.Tunnels[0]
	if !tun.CarriesIPv6() || tun.Overlay6Local != netip.MustParseAddr("fd00:1::1") || tun.Overlay6Remote != netip.MustParseAddr("fd00:1::2") {
		t.Errorf("tunnel %+v, want IPv6 overlay fd00:1::1 peer fd00:1::2", tun)
	}
	want := []tunnel.Route{{Prefix: netip.MustParsePrefix("172.16.200.0/24"), Tunnel: "gre1"}, {Prefix: netip.MustParsePrefix("2001:db8:200::/64"), Tunnel: "gre1"}}
	if len(p.Routes) != 2 || p.Routes[0] != want[0] || p.Routes[1] != want[1] {
		t.Errorf("routes %v, want %v", p.Routes, want)
	}
	if r1v4, _ := r1().Validate(1500); r1v4.Tunnels[0].CarriesIPv6() {
		t.Errorf("a tunnel without overlay6 carries IPv6")
	}
}

// TestValidateOuterIPv6: a tunnel over IPv6 is sized as ip6gre sizes it,
// 1448 with the encapsulation limit (ip6gre's default, 4) and 1456
// without, keys taking 4 more as over IPv4.
func TestValidateOuterIPv6(t *testing.T) {
	cases := []struct {
		limit, key string
		wantLimit  int
		wantMTU    uint16
	}{
		{"", "", 4, 1448},
		{"none", "", -1, 1456},
		{"0", "", 0, 1448},
		{"", "7", 4, 1444},
	}
	for _, c := range cases {
		r := r1()
		r.Tunnels[0].Local, r.Tunnels[0].Remote = "2001:db8:ffff:100::1", "2001:db8:ffff:200::1"
		r.Tunnels[0].EncapLimit, r.Tunnels[0].Key = c.limit, c.key
		p, err := r.Validate(1500)
		if err != nil {
			t.Fatal(err)
		}
		tun := p.Tunnels[0]
		if tun.EncapLimit != c.wantLimit || tun.MTU != c.wantMTU || tun.Local != netip.MustParseAddr("2001:db8:ffff:100::1") {
			t.Errorf("encaplimit %q key %q: tunnel %+v, want encapsulation limit %d, MTU %d", c.limit, c.key, tun, c.wantLimit, c.wantMTU)
		}
	}
	if p, _ := r1().Validate(1500); p.Tunnels[0].EncapLimit != 0 {
		t.Errorf("a tunnel over IPv4 has encapsulation limit %d", p.Tunnels[0].EncapLimit)
	}
}

func TestValidateErrors(t *testing.T) {
	cases := []struct {
		name string
		edit func(r *Router)
		want string
	}{
		{"no device", func(r *Router) { r.Device = "" }, "no WAN device"},
		{"bad decap", func(r *Router) { r.Decap = "ebpf" }, "use auto, xdp or tc"},
		{"bad tc", func(r *Router) { r.TC = "qdisc" }, "use auto, tcx or clsact"},
		{"no tunnel", func(r *Router) { r.Tunnels = nil }, "no tunnel"},
		{"bad local", func(r *Router) { r.Tunnels[0].Local = "10.100.0" }, `local "10.100.0" is not an IPv4 address or a global or unique-local IPv6 one`},
		{"ipv6 remote, ipv4 local", func(r *Router) { r.Tunnels[0].Remote = "2001:db8::1" }, "local 10.100.0.1 and remote 2001:db8::1 are of different families"},
		{"link-local remote", func(r *Router) { r.Tunnels[0].Local, r.Tunnels[0].Remote = "2001:db8::1", "fe80::2" }, `remote "fe80::2" is not an IPv4 address or a global or unique-local IPv6 one`},
		{"ipv6 overlay", func(r *Router) { r.Tunnels[0].Overlay = "fd00:1::1" }, `overlay "fd00:1::1" is not an IPv4 address`},
		{"encaplimit over ipv4", func(r *Router) { r.Tunnels[0].EncapLimit = "4" }, "encaplimit is for a tunnel over IPv6"},
		{"bad encaplimit", func(r *Router) {
			r.Tunnels[0].Local, r.Tunnels[0].Remote, r.Tunnels[0].EncapLimit = "2001:db8::1", "2001:db8::2", "256"
		}, `encaplimit "256": use 0..255 or none`},
		{"pmtudisc off over ipv6", func(r *Router) {
			r.Tunnels[0].Local, r.Tunnels[0].Remote, r.Tunnels[0].TTL, r.Tunnels[0].PMTUDisc = "2001:db8::1", "2001:db8::2", "inherit", "off"
		}, "IPv6 has no DF bit to copy"},
		{"missing peer", func(r *Router) { r.Tunnels[0].Peer = "" }, "missing peer address"},
		{"bad prefix", func(r *Router) { r.Tunnels[0].Routes = []string{"172.16.200.0/33"} }, "is not an IPv4 or IPv6 prefix"},
		{"ipv6 route without ipv6 overlay", func(r *Router) { r.Tunnels[0].Routes = []string{"2001:db8:200::/64"} }, "route 2001:db8:200::/64 is IPv6: give the tunnel IPv6 addresses too (--overlay6, --peer6)"},
		{"overlay6 without peer6", func(r *Router) { r.Tunnels[0].Overlay6 = "fd00:1::1" }, "give both overlay6 and peer6"},
		{"link-local overlay6", func(r *Router) { r.Tunnels[0].Overlay6, r.Tunnels[0].Peer6 = "fe80::1", "fd00:1::2" }, `overlay6 "fe80::1" is not a global or unique-local IPv6 address`},
		{"ipv4 peer6", func(r *Router) { r.Tunnels[0].Overlay6, r.Tunnels[0].Peer6 = "fd00:1::1", "192.168.1.2" }, `peer6 "192.168.1.2" is not a global or unique-local IPv6 address`},
		{"same overlay6 ends", func(r *Router) { r.Tunnels[0].Overlay6, r.Tunnels[0].Peer6 = "fd00:1::1", "fd00:1::1" }, "check overlay6/peer6"},
		{"ipv6 host bits", func(r *Router) {
			r.Tunnels[0].Overlay6, r.Tunnels[0].Peer6 = "fd00:1::1", "fd00:1::2"
			r.Tunnels[0].Routes = []string{"2001:db8:200::1/64"}
		}, "did you mean 2001:db8:200::/64"},
		{"overlapping ipv6 routes", func(r *Router) {
			r.Tunnels[0].Overlay6, r.Tunnels[0].Peer6 = "fd00:1::1", "fd00:1::2"
			r.Tunnels[0].Routes = []string{"2001:db8::/32", "2001:db8:200::/64"}
		}, "2001:db8::/32 overlaps route 2001:db8:200::/64"},
		{"host bits", func(r *Router) { r.Tunnels[0].Routes = []string{"172.16.200.1/24"} }, "did you mean 172.16.200.0/24"},
		{"overlapping routes", func(r *Router) { r.Tunnels[0].Routes = []string{"172.16.0.0/16", "172.16.200.0/24"} }, "172.16.0.0/16 overlaps route 172.16.200.0/24"},
		{"bad rp-filter", func(r *Router) { r.Tunnels[0].RPFilter = "on" }, `rp-filter "on": use strict, loose or off`},
		{"key and ikey", func(r *Router) { r.Tunnels[0].Key, r.Tunnels[0].IKey = "1", "2" }, "give key, or ikey and okey, not both"},
		{"bad okey", func(r *Router) { r.Tunnels[0].OKey = "x" }, `okey "x": use a number`},
		{"pmtudisc off with a fixed ttl", func(r *Router) { r.Tunnels[0].PMTUDisc = "off" }, "pmtudisc off needs ttl inherit"},
		{"bad key", func(r *Router) { r.Tunnels[0].Key = "-1" }, "key \"-1\""},
		{"bad ttl", func(r *Router) { r.Tunnels[0].TTL = "0" }, "use 1..255 or inherit"},
		{"bad tos", func(r *Router) { r.Tunnels[0].TOS = "300" }, "use inherit or 0..255"},
		{"same ends", func(r *Router) { r.Tunnels[0].Remote = "10.100.0.1" }, "same address"},
		{"duplicate name", func(r *Router) {
			t2 := r.Tunnels[0]
			t2.Remote, t2.Peer, t2.Routes = "10.50.0.1", "192.168.2.2", nil
			r.Tunnels = append(r.Tunnels, t2)
		}, "used twice"},
		{"same endpoints, same ikey", func(r *Router) {
			t2 := r.Tunnels[0]
			t2.Name, t2.Peer, t2.Routes = "gre2", "192.168.2.2", nil
			r.Tunnels = append(r.Tunnels, t2)
		}, "give each tunnel between two endpoints its own ikey"},
		{"long name", func(r *Router) { r.Tunnels[0].Name = "a-very-long-tunnel-name" }, "at most 14"},
		{"fast path twice", func(r *Router) { r.FastPath = []string{"lan1", "lan1"} }, "name each LAN device once"},
		{"kernel mode with bpf options", func(r *Router) { r.Mode, r.FastPath = ModeKernel, []string{"lan1"} }, "drop them with mode kernel"},
		{"bad mode", func(r *Router) { r.Mode = "dpdk" }, `mode "dpdk": use bpf or kernel`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := r1()
			c.edit(&r)
			_, err := r.Validate(1500)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
	if _, err := r1().Validate(590); err == nil || !strings.Contains(err.Error(), "raise the WAN MTU") {
		t.Errorf("tiny WAN MTU: %v", err)
	}
}

func TestLoadYAML(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "r1.yaml")
	yaml := `device: wan1
decap: xdp
tunnels:
  - name: hq
    local: 10.100.0.1
    remote: 10.200.0.1
    key: 7
    overlay: 192.168.1.1
    peer: 192.168.1.2
    routes: [172.16.200.0/24, 172.17.0.0/16]
    rp_filter: loose
`
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := Load(path, "")
	if err != nil {
		t.Fatal(err)
	}
	p, err := r.Validate(1500)
	if err != nil {
		t.Fatal(err)
	}
	if p.Decap != "xdp" || p.Tunnels[0].Name != "hq" || *p.Tunnels[0].OKey != 7 || len(p.Routes) != 2 || p.Tunnels[0].RPFilter != tunnel.RPLoose {
		t.Errorf("plan %+v", p)
	}
	if err := os.WriteFile(path, []byte("device: wan1\ntunels: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path, ""); err == nil || !strings.Contains(err.Error(), "tunels") {
		t.Errorf("misspelt field: %v", err)
	}
}

// One file for every site: --site picks a router's part, and every way of
// picking wrongly says what to do.
func TestLoadSites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sites.yaml")
	sites := `sites:
  r1:
    device: wan1
    tunnels: [{name: gre1, local: 10.100.0.1, remote: 10.200.0.1, overlay: 192.168.1.1, peer: 192.168.1.2}]
  r2:
    device: wan2
    tunnels: [{name: gre1, local: 10.200.0.1, remote: 10.100.0.1, overlay: 192.168.1.2, peer: 192.168.1.1}]
`
	if err := os.WriteFile(path, []byte(sites), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := Load(path, "r2")
	if err != nil {
		t.Fatal(err)
	}
	if r.Device != "wan2" || len(r.Tunnels) != 1 || r.Tunnels[0].Local != "10.200.0.1" {
		t.Errorf("site r2: %+v", r)
	}
	for site, want := range map[string]string{
		"":   "describes sites r1, r2: pick one with --site NAME",
		"r9": `has no site "r9": have r1, r2`,
	} {
		if _, err := Load(path, site); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("site %q: %v, want %q", site, err, want)
		}
	}
	if err := os.WriteFile(path, []byte("device: wan1\n"+sites), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path, "r1"); err == nil || !strings.Contains(err.Error(), "under sites: or none") {
		t.Errorf("mixed file: %v", err)
	}
	if err := os.WriteFile(path, []byte("device: wan1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path, "r1"); err == nil || !strings.Contains(err.Error(), "drop --site r1") {
		t.Errorf("site on a single-router file: %v", err)
	}
}

// Overlap checking must cope with the 100,000-route scale (it is
// O(n log n)) and still find one overlap among them.
func TestValidateManyRoutes(t *testing.T) {
	r := r1()
	r.Tunnels[0].Routes = nil
	for i := range 100000 {
		r.Tunnels[0].Routes = append(r.Tunnels[0].Routes, netip.AddrFrom4([4]byte{100, byte(i >> 16), byte(i >> 8), byte(i)}).String()+"/32")
	}
	if _, err := r.Validate(1500); err != nil {
		t.Fatal(err)
	}
	r.Tunnels[0].Routes = append(r.Tunnels[0].Routes, "100.0.200.0/24")
	if _, err := r.Validate(1500); err == nil || !strings.Contains(err.Error(), "100.0.200.0/24 overlaps") {
		t.Fatalf("overlap among many: %v", err)
	}
}

// health: in YAML reads as run uses it, defaults filled in, and a bad
// value is refused by attach's validation too, naming the fix.
func TestHealth(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.yaml")
	body := "device: wan1\nhealth: {interval: 250ms, misses: 5, withdraw: true}\n"
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := Load(path, "")
	if err != nil {
		t.Fatal(err)
	}
	if interval, misses, err := r.Health.Probe(); err != nil || interval != 250*time.Millisecond || misses != 5 || !r.Health.Withdraw {
		t.Errorf("health %+v: %v %d %v", r.Health, interval, misses, err)
	}
	for _, c := range []struct {
		h        Health
		interval time.Duration
		misses   int
		err      string
	}{
		{Health{}, time.Second, 3, ""},
		{Health{Interval: "0"}, 0, 3, ""},
		{Health{Interval: "2s", Misses: 1}, 2 * time.Second, 1, ""},
		{Health{Interval: "1ms"}, 0, 0, `health: interval "1ms": use a duration of 10ms or more (1s, 500ms), or 0 for no probes`},
		{Health{Interval: "often"}, 0, 0, `health: interval "often"`},
		{Health{Misses: -1}, 0, 0, "health: misses -1: use 1..1000"},
	} {
		interval, misses, err := c.h.Probe()
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%+v: %v, want %q", c.h, err, c.err)
			}
			bad := r1()
			bad.Health = c.h
			if _, err := bad.Validate(1500); err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("Validate with %+v: %v, want %q", c.h, err, c.err)
			}
			continue
		}
		if err != nil || interval != c.interval || misses != c.misses {
			t.Errorf("%+v: %v %d %v, want %v %d", c.h, interval, misses, err, c.interval, c.misses)
		}
	}
}
