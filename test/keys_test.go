package test

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
)

// keyedPair is the lab's two routers joined by two tunnels between the
// same WAN addresses: gre1 keyed 1 both ways carries the lower half of
// each LAN, gre2 with different keys each way (r1 sends 3, takes 2) the
// upper half.
func keyedPair(t *testing.T, mode string) {
	t.Helper()
	conf := func(router string, local, remote string, o, lan string, in2, out2 int) string {
		return fmt.Sprintf(`device: wan%s
mode: %s
tunnels:
  - {name: gre1, local: %s, remote: %s, key: 1, overlay: 192.168.1.%s, peer: 192.168.1.%s, routes: [%s.0/25]}
  - {name: gre2, local: %s, remote: %s, ikey: %d, okey: %d, overlay: 192.168.2.%s, peer: 192.168.2.%s, routes: [%s.128/25]}
`, router, mode, local, remote, o, map[string]string{"1": "2", "2": "1"}[o], lan, local, remote, in2, out2, o, map[string]string{"1": "2", "2": "1"}[o], lan)
	}
	r2 := writeConfig(t, conf("2", "10.200.0.1", "10.100.0.1", "2", "172.16.100", 3, 2))
	r1 := writeConfig(t, conf("1", "10.100.0.1", "10.200.0.1", "1", "172.16.200", 2, 3))
	grebpf(t, "--netns", "r2", "attach", "--config", r2)
	grebpf(t, "--netns", "r1", "attach", "--config", r1)
}

type tunnelTraffic map[string][2]uint64 // rx, tx packets per tunnel

func trafficOf(t *testing.T, ns string) tunnelTraffic {
	t.Helper()
	var s statsJSON
	if err := json.Unmarshal([]byte(grebpf(t, "--netns", ns, "stats", "--json")), &s); err != nil {
		t.Fatal(err)
	}
	out := tunnelTraffic{}
	for _, tu := range s.Tunnels {
		out[tu.Name] = [2]uint64{tu.RxPackets, tu.TxPackets}
	}
	return out
}

// TestKeyedTunnels: two tunnels between the same endpoints, told apart by
// key, one with separate input and output keys; each carries exactly its
// own traffic both ways.
func TestKeyedTunnels(t *testing.T) {
	labUp(t)
	keyedPair(t, "bpf")
	checkKeyedPair(t)
}

// checkKeyedPair pings across each tunnel, the upper halves of the LANs
// from and to second addresses, and checks that only that tunnel counted
// the request and the reply on r1.
func checkKeyedPair(t *testing.T) {
	t.Helper()
	in(t, "lan1", "ip", "addr", "add", "172.16.100.200/24", "dev", "eth0")
	in(t, "lan2", "ip", "addr", "add", "172.16.200.200/24", "dev", "eth0")
	for _, c := range []struct {
		from, to, tunnel string
		extra            []string
	}{
		{"lan1", "172.16.200.1", "gre1", nil},
		{"lan1", "172.16.200.200", "gre2", []string{"-I", "172.16.100.200"}},
		{"lan2", "172.16.100.200", "gre2", []string{"-I", "172.16.200.200"}},
		{"r1", "192.168.1.2", "gre1", nil},
		{"r1", "192.168.2.2", "gre2", nil},
	} {
		before := trafficOf(t, "r1")
		if r := ping(t, c.from, c.to, c.extra...); r.code != 0 {
			t.Errorf("ping %s → %s failed:\n%s%s", c.from, c.to, r.out, r.stderr)
			continue
		}
		after := trafficOf(t, "r1")
		for name := range after {
			rx, tx := after[name][0]-before[name][0], after[name][1]-before[name][1]
			if want := uint64(map[bool]int{true: 1}[name == c.tunnel]); rx != want || tx != want {
				t.Errorf("ping %s → %s: r1's %s received %d and sent %d packets, want %d each", c.from, c.to, name, rx, tx, want)
			}
		}
	}
}

// TestParityKeys: the same two keyed tunnels, r1 with grebpf and r2 with
// ip_gre (ikey/okey as ip_gre reads them).
func TestParityKeys(t *testing.T) {
	needIPGRE(t)
	labUp(t)
	keyedPair(t, "bpf")
	grebpf(t, "--netns", "r2", "detach")
	r2 := writeConfig(t, `device: wan2
mode: kernel
tunnels:
  - {name: gre1, local: 10.200.0.1, remote: 10.100.0.1, key: 1, overlay: 192.168.1.2, peer: 192.168.1.1, routes: [172.16.100.0/25]}
  - {name: gre2, local: 10.200.0.1, remote: 10.100.0.1, ikey: 3, okey: 2, overlay: 192.168.2.2, peer: 192.168.2.1, routes: [172.16.100.128/25]}
`)
	grebpf(t, "--netns", "r2", "attach", "--config", r2)
	checkKeyedPair(t)
}

// TestChecksums: with --csum on both routers every packet carries a GRE
// checksum, each is checked, and TCP crosses.
func TestChecksums(t *testing.T) {
	labUp(t)
	attachBoth(t, "--csum")
	frame := captureOne(t, "wan", "r1", "ip proto 47 and src host 10.100.0.1", func() { mustPing(t, "lan1", "172.16.200.1") })
	if frame[34]&0x80 == 0 {
		t.Errorf("GRE header %x has no checksum", frame[34:42])
	}
	gbps, retrans := iperf(t, 3)
	t.Logf("iperf3 TCP lan1 → lan2 with GRE checksums: %.2f Gbit/s, %d retransmits", gbps, retrans)
	for _, r := range []string{"r1", "r2"} {
		s := stats(t, r)
		if s.reason("gre-checksum") != 0 || s.reason("csum-flag") != 0 || s.Tunnels[0].RxPackets == 0 {
			t.Errorf("%s: gre-checksum %d, csum-flag %d, received %d", r, s.reason("gre-checksum"), s.reason("csum-flag"), s.Tunnels[0].RxPackets)
		}
	}
}

// TestSequenceNumbers: with --seq on both routers every packet is
// numbered and checked in order: a ping sequence loses nothing, and TCP
// crosses (the tunnel interfaces segment in software, as ip_gre with
// oseq).
func TestSequenceNumbers(t *testing.T) {
	labUp(t)
	attachBoth(t, "--seq")
	var show struct {
		Tunnels []struct{ ISeq, OSeq bool }
	}
	if err := json.Unmarshal([]byte(grebpf(t, "--netns", "r1", "show", "--json")), &show); err != nil || len(show.Tunnels) != 1 || !show.Tunnels[0].ISeq || !show.Tunnels[0].OSeq {
		t.Fatalf("show says %+v (%v), want iseq and oseq", show, err)
	}
	frame := captureOne(t, "wan", "r1", "ip proto 47 and src host 10.100.0.1", func() { mustPing(t, "lan1", "172.16.200.1") })
	if frame[34]&0x10 == 0 {
		t.Errorf("GRE header %x has no sequence number", frame[34:42])
	}
	for i := 0; i < 5; i++ {
		mustPing(t, "lan1", "172.16.200.1")
		mustPing(t, "lan2", "172.16.100.1")
	}
	for _, r := range []string{"r1", "r2"} {
		if n := stats(t, r).reason("seq-order"); n != 0 {
			t.Errorf("%s dropped %d packets of a ping sequence as out of order", r, n)
		}
	}
	// The lab's veths, spread over CPUs, reorder some of a TCP stream's
	// packets; iseq drops those, as ip_gre's does.
	gbps, retrans := iperf(t, 3)
	t.Logf("iperf3 TCP lan1 → lan2 with sequence numbers: %.2f Gbit/s, %d retransmits; dropped as out of order: r1 %d, r2 %d",
		gbps, retrans, stats(t, "r1").reason("seq-order"), stats(t, "r2").reason("seq-order"))
	if gbps <= 0 {
		t.Error("no TCP with sequence numbers")
	}
}

// TestParitySeqCsum: grebpf and ip_gre, both with sequence numbers, take
// each other's packets both ways round; with checksums, ip_gre checks
// grebpf's. (ip_gre's own checksums cannot be checked in this lab: over a
// veth it leaves the field to checksum offload, which never fills it,
// and the receiving skb says so; grebpf reads the bytes and refuses them.)
func TestParitySeqCsum(t *testing.T) {
	needIPGRE(t)
	for _, opt := range []map[string]string{{"bpf": "--seq", "kernel": "--seq"}, {"bpf": "--ocsum", "kernel": "--icsum"}} {
		for _, c := range []struct{ r1, r2 string }{{"bpf", "kernel"}, {"kernel", "bpf"}} {
			t.Run(opt["bpf"][2:]+"_r1-"+c.r1+"_r2-"+c.r2, func(t *testing.T) {
				labUp(t)
				grebpf(t, attachArgs("r2", append(slices.Clone(modeArgs[c.r2]), opt[c.r2])...)...)
				grebpf(t, attachArgs("r1", append(slices.Clone(modeArgs[c.r1]), opt[c.r1])...)...)
				for i := 0; i < 3; i++ {
					mustPing(t, "lan1", "172.16.200.1")
					mustPing(t, "lan2", "172.16.100.1")
				}
				gbps, _ := iperf(t, 2)
				if gbps <= 0 {
					t.Errorf("no TCP with %s", opt["bpf"])
				}
			})
		}
	}
}
