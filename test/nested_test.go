package test

import (
	"os"
	"strings"
	"testing"
)

// innerTunnel is a tunnel between lan1 and lan2 carried inside grebpf's.
type innerTunnel struct {
	kind string
	// add returns the ip link arguments making the device dev in host
	// (local address) to peer.
	add func(local, peer string) []string
}

var innerTunnels = []innerTunnel{
	{"vxlan", func(local, peer string) []string {
		return []string{"type", "vxlan", "id", "42", "local", local, "remote", peer, "dstport", "4789"}
	}},
	{"geneve", func(_, peer string) []string { return []string{"type", "geneve", "id", "42", "remote", peer} }},
	{"gre", func(local, peer string) []string { return []string{"type", "gre", "local", local, "remote", peer} }},
}

// TestNestedTunnels: TCP over VXLAN, GENEVE and GRE between the lab's
// hosts crosses the tunnel both ways, with the senders' GSO kept (the
// inner tunnel's packets reach encap already marked encapsulated, which
// encap must not refuse). Each kernel module the inner tunnel needs must
// be there in the VM; this host has only vxlan.
func TestNestedTunnels(t *testing.T) {
	for _, it := range innerTunnels {
		t.Run(it.kind, func(t *testing.T) {
			labUp(t)
			attachBoth(t)
			hosts := []struct{ ns, local, peer, addr string }{
				{"lan1", "172.16.100.1", "172.16.200.1", "10.77.0.1/24"},
				{"lan2", "172.16.200.1", "172.16.100.1", "10.77.0.2/24"},
			}
			for _, h := range hosts {
				r := execute(t, "ip", append([]string{"-n", h.ns, "link", "add", "in0"}, it.add(h.local, h.peer)...)...)
				if r.code != 0 {
					if os.Getenv("GREBPF_VM") == "" && strings.Contains(r.stderr, "Unknown device type") {
						t.Skipf("this kernel has no %s; runs under make test-vm", it.kind)
					}
					t.Fatalf("add %s device in %s: %s", it.kind, h.ns, r.stderr)
				}
				// The inner tunnel's packets must fit the tunnel's 1476.
				in(t, h.ns, "ip", "link", "set", "in0", "mtu", "1400", "up")
				in(t, h.ns, "ip", "addr", "add", h.addr, "dev", "in0")
			}
			mustPing(t, "lan1", "10.77.0.2")
			for _, d := range [][3]string{{"lan1", "lan2", "10.77.0.2"}, {"lan2", "lan1", "10.77.0.1"}} {
				gbps, retrans := iperfBetween(t, d[0], d[1], d[2], 3)
				t.Logf("iperf3 TCP over %s %s → %s through the tunnel: %.2f Gbit/s, %d retransmits", it.kind, d[0], d[1], gbps, retrans)
				if gbps <= 0 {
					t.Errorf("no TCP over %s %s → %s", it.kind, d[0], d[1])
				}
			}
			for _, r := range []string{"r1", "r2"} {
				if n := stats(t, r).reason("encap-failed"); n != 0 {
					t.Errorf("%s counted %d encap-failed", r, n)
				}
			}
		})
	}
}
