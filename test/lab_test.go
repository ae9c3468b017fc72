package test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/grebpf/grebpf/internal/lab"
)

// The seed without a tunnel: the WAN router drops private and
// documentation space silently, whatever the WAN's family.
func TestSeedWithoutTunnel(t *testing.T) {
	for _, c := range []struct {
		lab  lab.Lab
		to   string
		want []string
	}{
		{lab.Default, "172.16.200.1", []string{"172.16.100.254", "*", "*", "*", "*"}},
		{ipv6WAN, "2001:db8:200::1", []string{"2001:db8:100::254", "*", "*", "*", "*"}},
	} {
		labUp(t, labArgs(c.lab)...)
		if got := traceroute(t, "lan1", c.to, 5); !slices.Equal(got, c.want) {
			t.Errorf("%s: traceroute lan1 → %s: %v, want %v", c.lab, c.to, got, c.want)
		}
		grebpf(t, "lab", "down")
	}
}

// The seed with the tunnel, once per decap attach point, and with the XDP
// fast path (on a lab prepared for it); over the IPv4 WAN (ip_gre's GRE,
// 24 bytes) and over the IPv6 one (ip6gre's, 52 bytes with its
// encapsulation limit).
func TestTunnel(t *testing.T) {
	for _, wan := range []struct {
		lab lab.Lab
		mtu int
		// gre matches the WAN's view of a tunnel packet, either way.
		gre *regexp.Regexp
	}{
		{lab.Default, 1476, regexp.MustCompile(`^\S+ \S+ +\S+ +IP (10\.100\.0\.1 > 10\.200\.0\.1|10\.200\.0\.1 > 10\.100\.0\.1): GREv0, `)},
		{ipv6WAN, 1448, regexp.MustCompile(`^\S+ \S+ +\S+ +IP6 (2001:db8:ffff:100::1 > 2001:db8:ffff:200::1|2001:db8:ffff:200::1 > 2001:db8:ffff:100::1): DSTOPT .*GREv0, `)},
	} {
		for _, mode := range []struct {
			name, decap string
			lab, attach []string
		}{
			{"decap-xdp", "xdp", nil, []string{"--decap", "xdp"}},
			{"decap-tc", "tc", nil, []string{"--decap", "tc"}},
			{"fastpath", "xdp", []string{"--fastpath"}, []string{"--fastpath", "LAN"}},
		} {
			decap := mode.name
			name := mode.name
			if wan.lab.WAN == lab.WANIPv6 {
				decap, name = "ipv6 WAN, "+decap, "ipv6-wan/"+name
			}
			t.Run(name, func(t *testing.T) {
				labUp(t, append(labArgs(wan.lab), mode.lab...)...)
				attachBothIn(t, wan.lab, mode.attach...)
				var show struct {
					Decap    string
					FastPath []string
				}
				if err := json.Unmarshal([]byte(grebpf(t, "--netns", "r1", "show", "--json")), &show); err != nil || show.Decap != mode.decap {
					t.Fatalf("show says decap %q (%v), want %s", show.Decap, err, mode.decap)
				}
				if fast := slices.Equal(show.FastPath, []string{"lan1"}); fast != (mode.lab != nil) {
					t.Fatalf("show says fast path on %v", show.FastPath)
				}

				t.Run("traceroute", func(t *testing.T) { checkSeedTraceroutes(t, decap) })
				t.Run("ping overlay", func(t *testing.T) {
					for _, c := range [][2]string{{"lan1", "192.168.1.2"}, {"r1", "192.168.1.2"}, {"lan2", "192.168.1.1"}, {"r2", "192.168.1.1"}, {"lan1", "172.16.200.1"}, {"lan2", "172.16.100.1"},
						{"lan1", "fd00:1::2"}, {"r1", "fd00:1::2"}, {"lan2", "fd00:1::1"}, {"r2", "fd00:1::1"}, {"lan1", "2001:db8:200::1"}, {"lan2", "2001:db8:100::1"}} {
						mustPing(t, c[0], c[1])
					}
				})
				t.Run("pmtu", func(t *testing.T) {
					// IPv4: the tunnel MTU less 8 bytes of ICMP and 20 of IPv4.
					if r := ping(t, "lan1", "172.16.200.1", "-M", "do", "-s", fmt.Sprint(wan.mtu-28)); r.code != 0 {
						t.Errorf("%d-byte DF ping failed:\n%s%s", wan.mtu, r.out, r.stderr)
					}
					r := ping(t, "lan1", "172.16.200.1", "-M", "do", "-s", fmt.Sprint(wan.mtu-27))
					if want := fmt.Sprintf("Frag needed and DF set (mtu = %d)", wan.mtu); r.code == 0 || !strings.Contains(r.out, "From 172.16.100.254") || !strings.Contains(r.out, want) {
						t.Errorf("%d-byte DF ping: want %q from r1, got exit %d:\n%s%s", wan.mtu+1, want, r.code, r.out, r.stderr)
					}
					// IPv6: 8 bytes of ICMPv6 and 40 of IPv6; routers never fragment.
					if r := ping(t, "lan1", "2001:db8:200::1", "-M", "do", "-s", fmt.Sprint(wan.mtu-48)); r.code != 0 {
						t.Errorf("%d-byte IPv6 ping failed:\n%s%s", wan.mtu, r.out, r.stderr)
					}
					r = ping(t, "lan1", "2001:db8:200::1", "-M", "do", "-s", "1452")
					if want := fmt.Sprintf("Packet too big: mtu=%d", wan.mtu); r.code == 0 || !strings.Contains(r.out, "From 2001:db8:100::254") || !strings.Contains(r.out, want) {
						t.Errorf("1500-byte IPv6 ping: want %q from r1, got exit %d:\n%s%s", want, r.code, r.out, r.stderr)
					}
				})
				t.Run("wan sees only gre", func(t *testing.T) {
					// Neighbour discovery (from global addresses too) is the WAN's own.
					lines := capture(t, "wan", "ip or (ip6 and not src net fe80::/10 and not (icmp6 and ip6[40] >= 133 and ip6[40] <= 137))", func() {
						mustPing(t, "lan1", "172.16.200.1")
						mustPing(t, "lan2", "172.16.100.1")
						mustPing(t, "lan1", "2001:db8:200::1")
						in(t, "lan1", "traceroute", "-n", "-q", "1", "-w", "1", "-m", "3", "-U", "172.16.200.1")
					})
					if len(lines) < 4 {
						t.Fatalf("captured %d packets, want at least 4", len(lines))
					}
					for _, l := range lines {
						if !wan.gre.MatchString(l) {
							t.Errorf("non-GRE packet on the WAN: %s", l)
						}
					}
				})
				t.Run("stats add up", func(t *testing.T) {
					tunnelsQuiet(t)
					// ICMP echoes of 56 bytes: 84-byte IPv4 packets, 104-byte IPv6 ones.
					for _, c := range []struct {
						to   string
						size uint64
					}{{"172.16.200.1", 84}, {"2001:db8:200::1", 104}} {
						statsAddUp(t, c.to, c.size)
					}
				})
				t.Run("iperf3", func(t *testing.T) {
					for _, c := range []struct{ family, to string }{{"IPv4", "172.16.200.1"}, {"IPv6", "2001:db8:200::1"}} {
						rx0, bytes0 := linkStat(t, "r2", "gre1", "rx_packets"), linkStat(t, "r2", "gre1", "rx_bytes")
						gbps, retrans := iperfBetween(t, "lan1", "lan2", c.to, 3)
						t.Logf("iperf3 TCP lan1 → lan2 over %s, %s: %.2f Gbit/s, %d retransmits", c.family, decap, gbps, retrans)
						if gbps <= 0 {
							t.Errorf("%s: no TCP throughput", c.family)
						}
						// GSO kept: what decap hands r2's tunnel interface are
						// the WAN's GRO'd aggregates, not wire-sized packets (a
						// decap that left IPv6 marked as IPv4 had them
						// segmented: 1,478 bytes a packet, 0.01 Gbit/s on 6.1).
						// The fast path forwards past the interface.
						rx, bytes := linkStat(t, "r2", "gre1", "rx_packets"), linkStat(t, "r2", "gre1", "rx_bytes")
						if per := float64(bytes-bytes0) / float64(max(rx-rx0, 1)); mode.lab == nil && per < 3000 {
							t.Errorf("%s: r2's gre1 received %.0f bytes a packet: GRO'd packets were not carried whole", c.family, per)
						}
					}
				})
			})
		}
	}
}

// tunnelsQuiet waits until the tunnels of the routers given (r1 and r2
// when none) carry nothing for a second: a tunnel interface that runs
// IPv6 sends its MLD reports (twice, a second apart) when it comes up and
// takes addresses, as ip_gre's does. A test that counts packets exactly
// starts after them.
func tunnelsQuiet(t *testing.T, routers ...string) {
	t.Helper()
	if len(routers) == 0 {
		routers = []string{"r1", "r2"}
	}
	moved := func() string {
		var sum uint64
		for _, r := range routers {
			var s statsJSON
			if err := json.Unmarshal([]byte(grebpf(t, "--netns", r, "stats", "--json")), &s); err != nil {
				t.Fatal(err)
			}
			for _, tu := range s.Tunnels {
				sum += tu.TxPackets + tu.RxPackets
			}
		}
		return fmt.Sprint(sum)
	}
	before := moved()
	eventually(t, 10*time.Second, func() string {
		time.Sleep(time.Second)
		now := moved()
		if now != before {
			before = now
			return "the tunnels never went quiet for a second"
		}
		return ""
	})
}

// statsAddUp pings 20 packets of size bytes from lan1 to lan2's address to
// and checks that both routers' tunnel counters moved by exactly those, and
// that nothing was dropped.
func statsAddUp(t *testing.T, to string, size uint64) {
	t.Helper()
	r1, r2 := stats(t, "r1"), stats(t, "r2")
	in(t, "lan1", "ping", "-q", "-c", "20", "-i", "0.01", to)
	r1b, r2b := stats(t, "r1"), stats(t, "r2")
	const n = 20
	for _, c := range []struct {
		what      string
		got, want uint64
	}{
		{"r1 tx packets", r1b.Tunnels[0].TxPackets - r1.Tunnels[0].TxPackets, n},
		{"r1 tx bytes", r1b.Tunnels[0].TxBytes - r1.Tunnels[0].TxBytes, n * size},
		{"r2 rx packets", r2b.Tunnels[0].RxPackets - r2.Tunnels[0].RxPackets, n},
		{"r2 rx bytes", r2b.Tunnels[0].RxBytes - r2.Tunnels[0].RxBytes, n * size},
		{"r2 tx packets", r2b.Tunnels[0].TxPackets - r2.Tunnels[0].TxPackets, n},
		{"r1 rx packets", r1b.Tunnels[0].RxPackets - r1.Tunnels[0].RxPackets, n},
		{"r1 rx bytes", r1b.Tunnels[0].RxBytes - r1.Tunnels[0].RxBytes, n * size},
	} {
		if c.got != c.want {
			t.Errorf("to %s: %s: %d, want %d", to, c.what, c.got, c.want)
		}
	}
	for _, s := range []statsJSON{r1b, r2b} {
		for _, r := range s.Reasons {
			if r.Action == "drop" && r.Packets != 0 {
				t.Errorf("drops on a clean lab: %s %d", r.Reason, r.Packets)
			}
		}
	}
}

// capture runs tcpdump in ns while fn runs and returns one line per packet.
func capture(t *testing.T, ns, filter string, fn func()) []string {
	t.Helper()
	return captureOn(t, ns, "any", filter, fn)
}

// captureOn is capture on one device.
func captureOn(t *testing.T, ns, dev, filter string, fn func()) []string {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, "tcpdump", "-lnni", dev, filter)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Gone however the test ends, a failure inside fn included.
	t.Cleanup(func() { cmd.Process.Kill() })
	ready := bufio.NewScanner(stderr)
	for ready.Scan() && !strings.Contains(ready.Text(), "listening on") {
	}
	lines := make(chan []string)
	go func() {
		var ls []string
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() != "" {
				ls = append(ls, sc.Text())
			}
		}
		lines <- ls
	}()
	fn()
	time.Sleep(300 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGINT)
	ls := <-lines
	cmd.Wait()
	return ls
}

// iperf runs an iperf3 TCP test lan1 → lan2 and returns Gbit/s received
// and the sender's retransmits.
func iperf(t *testing.T, seconds int) (float64, int) {
	t.Helper()
	return iperfBetween(t, "lan1", "lan2", "172.16.200.1", seconds)
}

// iperfBetween runs iperf3 TCP from one namespace to another's address.
func iperfBetween(t *testing.T, from, to, addr string, seconds int) (float64, int) {
	t.Helper()
	server := exec.Command("ip", "netns", "exec", to, "iperf3", "-s", "-1")
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		server.Process.Kill()
		server.Wait()
	}()
	eventually(t, 5*time.Second, func() string {
		if strings.Contains(in(t, to, "ss", "-Hltn", "sport", "=", ":5201"), "5201") {
			return ""
		}
		return "iperf3 server in " + to + " never listened"
	})
	r := execute(t, "ip", "netns", "exec", from, "iperf3", "-c", addr, "-t", strconv.Itoa(seconds), "-J")
	if r.code != 0 {
		t.Fatalf("iperf3 client: exit %d\n%s%s", r.code, r.out, r.stderr)
	}
	out := r.out
	var res struct {
		Error string
		End   struct {
			SumSent     struct{ Retransmits int } `json:"sum_sent"`
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("iperf3 JSON: %v\n%s", err, out)
	}
	if res.Error != "" {
		t.Fatalf("iperf3: %s", res.Error)
	}
	return res.End.SumReceived.BitsPerSecond / 1e9, res.End.SumSent.Retransmits
}
