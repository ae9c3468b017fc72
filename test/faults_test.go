package test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

// problems is what show --json says is wrong in r1.
func problems(t *testing.T) []string {
	t.Helper()
	var out struct{ Problems []string }
	if err := json.Unmarshal([]byte(grebpf(t, "--netns", "r1", "show", "--json")), &out); err != nil {
		t.Fatal(err)
	}
	return out.Problems
}

// wantProblem waits for show to list exactly the problem that contains
// want (the kernel applies some changes asynchronously).
func wantProblem(t *testing.T, want string) {
	t.Helper()
	eventually(t, 3*time.Second, func() string {
		if p := problems(t); len(p) != 1 || !strings.Contains(p[0], want) {
			return "show's problems are " + strings.Join(p, "; ") + ", want one saying " + want
		}
		return ""
	})
}

func noProblems(t *testing.T) {
	t.Helper()
	if p := problems(t); len(p) != 0 {
		t.Fatalf("show lists problems: %s", strings.Join(p, "; "))
	}
}

// The WAN side changing under a running data plane: traffic recovers
// without a re-attach once the kernel has what it needs again, and
// meanwhile show says what is wrong and what fixes it.
func TestRuntimeFaults(t *testing.T) {
	labUp(t)
	attachBoth(t)
	mustPing(t, "lan1", "172.16.200.1")
	noProblems(t)
	restoreRoute := func() { in(t, "r1", "ip", "route", "replace", "default", "via", "10.100.0.254") }

	t.Run("WAN link down and up", func(t *testing.T) {
		in(t, "r1", "ip", "link", "set", "wan1", "down")
		if p := problems(t); !slices.ContainsFunc(p, func(s string) bool {
			return strings.HasPrefix(s, "wan1 is down: bring it up (ip link set wan1 up)")
		}) {
			t.Fatalf("link down: show says %q", p)
		}
		if ping(t, "lan1", "172.16.200.1").code == 0 {
			t.Fatal("ping crossed a WAN link that is down")
		}
		in(t, "r1", "ip", "link", "set", "wan1", "up")
		// Going down took the default route with it, as it does for
		// ip_gre: whatever set it up (DHCP, networkd) sets it again.
		wantProblem(t, "tunnel gre1: no route to remote 10.200.0.1: add one through wan1")
		restoreRoute()
		eventually(t, 10*time.Second, func() string {
			if ping(t, "lan1", "172.16.200.1").code != 0 {
				return "no traffic after the link and its route came back"
			}
			return ""
		})
		// It flows; what is left is the neighbour the link took away.
		wantProblem(t, "next hop 10.100.0.254 on wan1 is no longer kept resolved")
		grebpf(t, attachArgs("r1")...)
		noProblems(t)
	})

	t.Run("WAN address removed and added back", func(t *testing.T) {
		in(t, "r1", "ip", "addr", "del", "10.100.0.1/24", "dev", "wan1")
		if p := problems(t); !slices.ContainsFunc(p, func(s string) bool {
			return strings.Contains(s, "tunnel gre1: local 10.100.0.1 is no longer an address here: add it back to wan1")
		}) {
			t.Fatalf("address removed: show says %q", p)
		}
		in(t, "r1", "ip", "addr", "add", "10.100.0.1/24", "dev", "wan1")
		restoreRoute()
		eventually(t, 10*time.Second, func() string {
			if ping(t, "lan1", "172.16.200.1").code != 0 {
				return "no traffic after the address came back"
			}
			return ""
		})
		grebpf(t, attachArgs("r1")...)
		noProblems(t)
	})

	t.Run("WAN MTU lowered", func(t *testing.T) {
		in(t, "r1", "ip", "link", "set", "wan1", "mtu", "1400")
		defer in(t, "r1", "ip", "link", "set", "wan1", "mtu", "1500")
		wantProblem(t, "tunnel gre1: MTU 1476 is more than wan1's MTU 1400 leaves (1376), so larger packets without DF are dropped (senders of DF ones are told the MTU): run grebpf attach again to follow it")
		mustPing(t, "lan1", "172.16.200.1") // small packets still cross
		// Encap reads the WAN route's MTU per packet: a DF sender is told
		// the tunnel MTU at once, as ip_gre tells it.
		before := stats(t, "r1")
		if r := ping(t, "lan1", "172.16.200.1", "-M", "do", "-s", "1448"); r.code == 0 || !strings.Contains(r.out+r.stderr, "mtu = 1376") {
			t.Fatalf("a 1476-byte DF ping over a 1400-byte WAN: exit %d %s%s", r.code, r.out, r.stderr)
		}
		// Without DF, ip_gre would fragment the outer packet; BPF cannot.
		// (lan1 must not fragment it first from what it just learned.)
		in(t, "lan1", "ip", "route", "flush", "cache")
		ping(t, "lan1", "172.16.200.1", "-M", "dont", "-s", "1448")
		after := stats(t, "r1")
		if f, o := after.reason("frag-needed")-before.reason("frag-needed"), after.reason("outer-too-big")-before.reason("outer-too-big"); f != 1 || o != 1 {
			t.Fatalf("frag-needed +%d, outer-too-big +%d, want one each", f, o)
		}
		grebpf(t, attachArgs("r1")...)
		noProblems(t)
		// Now the interface's MTU is the WAN's less the overhead: the stack
		// tells DF senders and fragments the rest before encap.
		in(t, "lan1", "ip", "route", "flush", "cache")
		if r := ping(t, "lan1", "172.16.200.1", "-M", "do", "-s", "1448"); r.code == 0 || !strings.Contains(r.out+r.stderr, "mtu = 1376") {
			t.Fatalf("after re-attach, a 1476-byte DF ping: exit %d %s%s", r.code, r.out, r.stderr)
		}
		in(t, "lan1", "ip", "route", "flush", "cache")
		ping(t, "lan1", "172.16.200.1", "-M", "dont", "-s", "1448") // the reply is 1500 bytes into wan1: lost
		if d := stats(t, "r1").reason("outer-too-big") - after.reason("outer-too-big"); d != 0 {
			t.Fatalf("after re-attach, a 1476-byte packet without DF: outer-too-big +%d, want it fragmented before encap", d)
		}
		if r := ping(t, "lan1", "172.16.200.1", "-M", "do", "-s", "1348"); r.code != 0 {
			t.Fatalf("a 1376-byte DF ping after re-attach: %s%s", r.out, r.stderr)
		}
		in(t, "r1", "ip", "link", "set", "wan1", "mtu", "1500")
		grebpf(t, attachArgs("r1")...)
	})

	t.Run("next hop changes MAC", func(t *testing.T) {
		// The WAN router's side of wan1 gets another MAC, as when a
		// gateway is replaced, and announces it (gratuitous ARP, as a
		// VRRP gateway does). Without the announcement the kernel finds
		// it once the entry's reachable time runs out, for ip_gre too.
		in(t, "wan", "sysctl", "-qw", "net.ipv4.conf.r1.arp_notify=1")
		in(t, "wan", "ip", "link", "set", "r1", "address", "02:aa:bb:cc:dd:01")
		start := time.Now()
		eventually(t, 30*time.Second, func() string {
			if ping(t, "lan1", "172.16.200.1").code != 0 {
				return "no traffic after the next hop's MAC changed"
			}
			return ""
		})
		t.Logf("traffic back %v after the next hop changed MAC", time.Since(start).Round(100*time.Millisecond))
		if !strings.Contains(in(t, "r1", "ip", "neigh", "show", "dev", "wan1"), "02:aa:bb:cc:dd:01 managed") {
			t.Fatalf("neighbour not updated:\n%s", in(t, "r1", "ip", "neigh", "show", "dev", "wan1"))
		}
		noProblems(t)
	})
}

// Without an announcement the managed neighbour grebpf keeps is probed
// again when its reachable time runs out (shortened here to keep the
// test short), so traffic finds the new MAC by itself. A plain STALE
// entry would keep the old MAC for good: nothing in the BPF path uses a
// neighbour the way the stack's output does.
func TestNexthopChangesMACSilently(t *testing.T) {
	labUp(t)
	// Before attach makes the entry: it keeps the timing it started with.
	in(t, "r1", "sysctl", "-qw", "net.ipv4.neigh.wan1.base_reachable_time_ms=2000", "net.ipv4.neigh.wan1.delay_first_probe_time=1")
	attachBoth(t)
	mustPing(t, "lan1", "172.16.200.1")
	in(t, "wan", "ip", "link", "set", "r1", "address", "02:aa:bb:cc:dd:02")
	start := time.Now()
	eventually(t, 40*time.Second, func() string {
		if ping(t, "lan1", "172.16.200.1").code != 0 {
			return "no traffic after the next hop's MAC changed:\n" + in(t, "r1", "ip", "neigh", "show", "dev", "wan1")
		}
		return ""
	})
	t.Logf("traffic back %v after the next hop changed MAC unannounced", time.Since(start).Round(100*time.Millisecond))
	noProblems(t)
}

// The fast path redirects into veths: where the peer cannot receive
// (no GRO, no XDP program: no NAPI), attach refuses instead of dropping
// every forwarded frame, and changes nothing.
func TestFastPathNeedsNAPI(t *testing.T) {
	labUp(t, "--fastpath")
	grebpf(t, attachArgs("r2", "--fastpath", "LAN")...)
	in(t, "lan1", "ethtool", "-K", "eth0", "gro", "off")
	before := snapshot(t, "r1", "wan1")
	refused(t, "the fast path redirects into lan1, but its veth peer eth0 in network namespace lan1 has no NAPI to receive on, so every frame would be dropped: turn GRO on there (ethtool -K eth0 gro on)",
		attachArgs("r1", "--fastpath", "LAN")...)
	if after := snapshot(t, "r1", "wan1"); after != before {
		t.Fatalf("a refused attach changed r1:\n%s", diffLines(before, after))
	}
	in(t, "lan1", "ethtool", "-K", "eth0", "gro", "on")
	grebpf(t, attachArgs("r1", "--fastpath", "LAN")...)
	mustPing(t, "lan1", "172.16.200.1")
}
