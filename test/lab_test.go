package test

import (
	"bufio"
	"encoding/json"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The seed without a tunnel: the WAN router drops private space silently.
func TestSeedWithoutTunnel(t *testing.T) {
	labUp(t)
	got := traceroute(t, "lan1", "172.16.200.1", 5)
	want := []string{"172.16.100.254", "*", "*", "*", "*"}
	if !slices.Equal(got, want) {
		t.Fatalf("traceroute lan1 → 172.16.200.1: %v, want %v", got, want)
	}
}

// The seed with the tunnel, once per decap attach point, and with the XDP
// fast path (on a lab prepared for it).
func TestTunnel(t *testing.T) {
	for _, mode := range []struct {
		name, decap string
		lab, attach []string
	}{
		{"decap-xdp", "xdp", nil, []string{"--decap", "xdp"}},
		{"decap-tc", "tc", nil, []string{"--decap", "tc"}},
		{"fastpath", "xdp", []string{"--fastpath"}, []string{"--fastpath", "LAN"}},
	} {
		decap := mode.name
		t.Run(mode.name, func(t *testing.T) {
			labUp(t, mode.lab...)
			attachBoth(t, mode.attach...)
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

			t.Run("traceroute", func(t *testing.T) {
				for _, c := range []struct {
					from, to string
					want     []string
				}{
					{"lan1", "172.16.200.1", []string{"172.16.100.254", "192.168.1.2", "172.16.200.1"}},
					{"lan2", "172.16.100.1", []string{"172.16.200.254", "192.168.1.1", "172.16.100.1"}},
				} {
					if got := traceroute(t, c.from, c.to, 5); !slices.Equal(got, c.want) {
						t.Errorf("traceroute %s → %s: %v, want %v", c.from, c.to, got, c.want)
					}
				}
			})
			t.Run("ping overlay", func(t *testing.T) {
				for _, c := range [][2]string{{"lan1", "192.168.1.2"}, {"r1", "192.168.1.2"}, {"lan2", "192.168.1.1"}, {"r2", "192.168.1.1"}, {"lan1", "172.16.200.1"}, {"lan2", "172.16.100.1"}} {
					mustPing(t, c[0], c[1])
				}
			})
			t.Run("pmtu", func(t *testing.T) {
				// 1448 + 8 ICMP + 20 IPv4 = 1476 = 1500 − 24 bytes of GRE.
				if r := ping(t, "lan1", "172.16.200.1", "-M", "do", "-s", "1448"); r.code != 0 {
					t.Errorf("1476-byte DF ping failed:\n%s%s", r.out, r.stderr)
				}
				r := ping(t, "lan1", "172.16.200.1", "-M", "do", "-s", "1449")
				if r.code == 0 || !strings.Contains(r.out, "From 172.16.100.254") || !strings.Contains(r.out, "Frag needed and DF set (mtu = 1476)") {
					t.Errorf("1477-byte DF ping: want frag needed (mtu = 1476) from r1, got exit %d:\n%s%s", r.code, r.out, r.stderr)
				}
			})
			t.Run("wan sees only gre", func(t *testing.T) {
				lines := capture(t, "wan", "ip", func() {
					mustPing(t, "lan1", "172.16.200.1")
					mustPing(t, "lan2", "172.16.100.1")
					in(t, "lan1", "traceroute", "-n", "-q", "1", "-w", "1", "-m", "3", "-U", "172.16.200.1")
				})
				gre := regexp.MustCompile(`^\S+ \S+ +\S+ +IP (10\.100\.0\.1 > 10\.200\.0\.1|10\.200\.0\.1 > 10\.100\.0\.1): GREv0, `)
				if len(lines) < 4 {
					t.Fatalf("captured %d packets, want at least 4", len(lines))
				}
				for _, l := range lines {
					if !gre.MatchString(l) {
						t.Errorf("non-GRE packet on the WAN: %s", l)
					}
				}
			})
			t.Run("stats add up", func(t *testing.T) {
				r1, r2 := stats(t, "r1"), stats(t, "r2")
				in(t, "lan1", "ping", "-q", "-c", "20", "-i", "0.01", "172.16.200.1")
				r1b, r2b := stats(t, "r1"), stats(t, "r2")
				const n, size = 20, 84 // ICMP echo of 56 bytes: 84-byte IPv4 packets
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
						t.Errorf("%s: %d, want %d", c.what, c.got, c.want)
					}
				}
				for _, s := range []statsJSON{r1b, r2b} {
					for _, r := range s.Reasons {
						if r.Action == "drop" && r.Packets != 0 {
							t.Errorf("drops on a clean lab: %s %d", r.Reason, r.Packets)
						}
					}
				}
			})
			t.Run("iperf3", func(t *testing.T) {
				gbps, retrans := iperf(t, 5)
				t.Logf("iperf3 TCP lan1 → lan2, %s: %.2f Gbit/s, %d retransmits", decap, gbps, retrans)
				if gbps <= 0 {
					t.Errorf("no TCP throughput")
				}
			})
		})
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
