package test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// snapshot is everything grebpf may touch for a router, as text.
func snapshot(t *testing.T, ns, dev string) string {
	t.Helper()
	var b strings.Builder
	section := func(name, out string) { fmt.Fprintf(&b, "## %s\n%s\n", name, out) }
	var devs []string
	for _, l := range strings.Split(in(t, ns, "ip", "-o", "link", "show"), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			devs = append(devs, f[1])
		}
	}
	section("devices", strings.Join(devs, " "))
	section("addresses", in(t, ns, "ip", "-4", "-o", "addr", "show"))
	section("routes", in(t, ns, "ip", "-4", "route", "show", "table", "all"))
	// Dynamic neighbours come and go with traffic; what attach adds is
	// permanent or managed.
	var neigh []string
	for _, l := range strings.Split(in(t, ns, "ip", "-4", "neigh", "show"), "\n") {
		if strings.Contains(l, "PERMANENT") || strings.Contains(l, "managed") {
			neigh = append(neigh, nudState.ReplaceAllString(l, ""))
		}
	}
	section("neighbours", strings.Join(neigh, "\n"))
	section("qdiscs", in(t, ns, "tc", "qdisc", "show", "dev", dev))
	section("ingress filters", in(t, ns, "tc", "filter", "show", "dev", dev, "ingress"))
	section("egress filters", in(t, ns, "tc", "filter", "show", "dev", dev, "egress"))
	section("bpf attachments", in(t, ns, "bpftool", "net", "show"))
	gro := regexp.MustCompile(`generic-receive-offload: \w+`).FindString(in(t, ns, "ethtool", "-k", dev))
	section("gro", gro)
	section("programs", ids(t, "prog"))
	section("links", ids(t, "link"))
	section("maps", ids(t, "map"))
	var pins []string
	filepath.Walk("/sys/fs/bpf/grebpf", func(p string, _ os.FileInfo, err error) error {
		if err == nil {
			pins = append(pins, p)
		}
		return nil
	})
	section("pins", strings.Join(pins, "\n"))
	return b.String()
}

// nudState is a neighbour's current state, which the kernel moves on its
// own (a managed entry goes REACHABLE, STALE, DELAY, PROBE, REACHABLE…).
var nudState = regexp.MustCompile(` (REACHABLE|STALE|DELAY|PROBE|INCOMPLETE|FAILED) *$`)

// ids lists the ids of every BPF object of a kind on the machine.
func ids(t *testing.T, kind string) string {
	t.Helper()
	r := execute(t, "bpftool", kind, "show")
	var out []string
	for _, l := range strings.Split(r.out, "\n") {
		if m := regexp.MustCompile(`^(\d+): `).FindStringSubmatch(l); m != nil {
			out = append(out, m[1])
		}
	}
	return strings.Join(out, " ")
}

func diffLines(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	var d []string
	for _, l := range al {
		if !slices.Contains(bl, l) {
			d = append(d, "- "+l)
		}
	}
	for _, l := range bl {
		if !slices.Contains(al, l) {
			d = append(d, "+ "+l)
		}
	}
	return strings.Join(d, "\n")
}

var attachModes = []struct {
	name  string
	args  []string
	decap string // as show prints it
}{
	{"decap-tc", []string{"--decap", "tc"}, "decap tc ingress"},
	{"decap-xdp", []string{"--decap", "xdp"}, "decap xdp native, GRO turned on"},
	{"decap-tc clsact", []string{"--decap", "tc", "--tc", "clsact"}, "decap tc ingress"},
	{"decap-xdp clsact", []string{"--decap", "xdp", "--tc", "clsact"}, "decap xdp native, GRO turned on"},
	{"decap-xdp-generic clsact", []string{"--xdp-generic", "--tc", "clsact"}, "decap xdp generic"},
	{"fastpath", []string{"--fastpath", "LAN"}, "decap xdp native, GRO turned on"},
	{"encap-egress", []string{"--encap", "egress"}, "decap tc ingress"},
	{"encap-egress clsact", []string{"--encap", "egress", "--tc", "clsact"}, "decap tc ingress"},
}

// Attach twice = attach once; detach leaves r1 as it was; in every mode,
// including the clsact path kernels without tcx take.
func TestAttachDetachLifecycle(t *testing.T) {
	for _, m := range attachModes {
		t.Run(m.name, func(t *testing.T) {
			fast := slices.Contains(m.args, "--fastpath")
			if fast {
				labUp(t, "--fastpath")
			} else {
				labUp(t)
			}
			// tc auto is tcx where the kernel has it, clsact elsewhere.
			where := "veth peer"
			if slices.Contains(m.args, "egress") {
				where = "egress"
			}
			show := m.decap + "  encap on each tunnel interface's " + where + "  tc attach clsact"
			if !slices.Contains(m.args, "clsact") && haveTCX() {
				show = m.decap + "  encap on each tunnel interface's " + where + "  tc attach tcx"
			}
			if fast {
				show += "\nXDP fast path on lan1"
			}
			grebpf(t, attachArgs("r2", m.args...)...)
			before := snapshot(t, "r1", "wan1")

			out := grebpf(t, attachArgs("r1", m.args...)...)
			if !strings.Contains(out, "attached on wan1 in r1") {
				t.Errorf("attach said %q", out)
			}
			if out := grebpf(t, "--netns", "r1", "show"); !strings.Contains(out, show) {
				t.Errorf("show does not say %q:\n%s", show, out)
			}
			mustPing(t, "lan1", "172.16.200.1")
			if got := traceroute(t, "lan1", "172.16.200.1", 5); !slices.Equal(got, []string{"172.16.100.254", "192.168.1.2", "172.16.200.1"}) {
				t.Errorf("traceroute %v", got)
			}
			once := snapshot(t, "r1", "wan1")
			if once == before {
				t.Fatal("attach changed nothing visible")
			}

			out = grebpf(t, attachArgs("r1", m.args...)...)
			if !strings.Contains(out, "nothing changed") {
				t.Errorf("second attach said %q, want nothing changed", out)
			}
			if twice := snapshot(t, "r1", "wan1"); twice != once {
				t.Errorf("second attach changed state:\n%s", diffLines(once, twice))
			}
			mustPing(t, "lan1", "172.16.200.1")

			grebpf(t, "--netns", "r1", "detach")
			eventually(t, 3*time.Second, func() string {
				if after := snapshot(t, "r1", "wan1"); after != before {
					return "detach left state behind:\n" + diffLines(before, after)
				}
				return ""
			})
			if out := grebpf(t, "--netns", "r1", "detach"); !strings.Contains(out, "nothing attached") {
				t.Errorf("second detach said %q", out)
			}
		})
	}
}

// A changed configuration is reconciled in place: routes follow the file.
func TestReattachReconciles(t *testing.T) {
	labUp(t)
	grebpf(t, attachArgs("r2")...)
	grebpf(t, attachArgs("r1", "--route", "172.31.0.0/16")...)
	if !strings.Contains(in(t, "r1", "ip", "route"), "172.31.0.0/16 dev gre1 proto 177") {
		t.Fatal("extra route missing")
	}
	grebpf(t, attachArgs("r1")...)
	routes := in(t, "r1", "ip", "route")
	if strings.Contains(routes, "172.31.0.0/16") || !strings.Contains(routes, "172.16.200.0/24 dev gre1 proto 177") {
		t.Fatalf("routes after reconfiguring:\n%s", routes)
	}
	if show := grebpf(t, "--netns", "r1", "show"); strings.Contains(show, "172.31.0.0/16") {
		t.Fatalf("show kept the removed route:\n%s", show)
	}
	mustPing(t, "lan1", "172.16.200.1")
}

// `ip netns exec r1 grebpf …` runs in a private mount namespace: the pins
// must still land in the host's bpffs, so the data plane outlives it.
func TestInsideIPNetnsExec(t *testing.T) {
	labUp(t)
	grebpf(t, attachArgs("r2")...)
	args := attachArgs("r1")[2:] // without --netns
	in(t, "r1", append([]string{grebpfBin}, args...)...)
	if _, err := os.Stat("/sys/fs/bpf/grebpf/r1/tunnels"); err != nil {
		t.Fatalf("pins not in the host's bpffs: %v", err)
	}
	mustPing(t, "lan1", "172.16.200.1")
	if show := in(t, "r1", grebpfBin, "show"); !strings.Contains(show, "netns r1  device wan1") {
		t.Errorf("show inside ip netns exec:\n%s", show)
	}
	in(t, "r1", grebpfBin, "detach")
	if _, err := os.Stat("/sys/fs/bpf/grebpf/r1"); !os.IsNotExist(err) {
		t.Errorf("pins left after detach: %v", err)
	}
}

// Several tunnels from a YAML file, one of them keyed.
func TestConfigFile(t *testing.T) {
	labUp(t)
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	r1 := write("r1.yaml", `device: wan1
tunnels:
  - name: site2
    local: 10.100.0.1
    remote: 10.200.0.1
    key: 4242
    overlay: 192.168.1.1
    peer: 192.168.1.2
    routes: [172.16.200.0/24]
`)
	r2 := write("r2.yaml", `device: wan2
tunnels:
  - name: site1
    local: 10.200.0.1
    remote: 10.100.0.1
    key: 4242
    overlay: 192.168.1.2
    peer: 192.168.1.1
    routes: [172.16.100.0/24]
`)
	grebpf(t, "--netns", "r2", "attach", "--config", r2)
	grebpf(t, "--netns", "r1", "attach", "--config", r1)
	lines := capture(t, "wan", "ip proto 47", func() { mustPing(t, "lan1", "172.16.200.1") })
	// -i any sees each packet twice: in from one router, out to the other.
	if len(lines) != 4 {
		t.Errorf("want request and reply, each seen twice, got:\n%s", strings.Join(lines, "\n"))
	}
	for _, l := range lines {
		if !strings.Contains(l, "GREv0, key=0x1092,") {
			t.Errorf("not GRE with key 4242: %s", l)
		}
	}
	// 1500 − 20 − 8: keyed GRE costs 4 bytes more.
	if link := in(t, "r1", "ip", "link", "show", "site2"); !strings.Contains(link, "mtu 1472") {
		t.Errorf("tunnel interface:\n%s", link)
	}
	if !strings.Contains(in(t, "r1", "ip", "route"), "172.16.200.0/24 dev site2 proto 177 scope link src 192.168.1.1") {
		t.Errorf("route:\n%s", in(t, "r1", "ip", "route"))
	}
	if out := grebpf(t, "--netns", "r1", "stats", "--tunnel", "site2"); !strings.Contains(out, "site2") {
		t.Errorf("stats --tunnel:\n%s", out)
	}
}
