package test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/grebpf/grebpf/internal/lab"
)

// narrowHop makes the link between the WAN router and r2 a 1400-byte one
// (a PPPoE or VPN hop): r1's outer packets to r2 no longer fit, and r2's
// WAN device has a lower MTU than when grebpf attached.
func narrowHop(t *testing.T) {
	t.Helper()
	in(t, "wan", "ip", "link", "set", "r2", "mtu", "1400")
	in(t, "r2", "ip", "link", "set", "wan2", "mtu", "1400")
}

type pathMTUJSON struct {
	Tunnels []struct {
		PathMTU        uint32 `json:"path_mtu"`
		PathMTUExpires int64  `json:"path_mtu_expires_seconds"`
	} `json:"tunnels"`
}

func pathMTUOf(t *testing.T, ns string) (uint32, int64) {
	t.Helper()
	var s pathMTUJSON
	if err := json.Unmarshal([]byte(grebpf(t, "--netns", ns, "show", "--json")), &s); err != nil || len(s.Tunnels) != 1 {
		t.Fatalf("show --json in %s: %v", ns, err)
	}
	return s.Tunnels[0].PathMTU, s.Tunnels[0].PathMTUExpires
}

// dfPing sends three DF pings of size bytes of data: the first one only
// teaches the router the path MTU (ip_gre loses it too), the next are
// answered "frag needed".
func dfPing(t *testing.T, from, to string, size int) result {
	t.Helper()
	return execute(t, "ip", "netns", "exec", from, "ping", "-c", "3", "-i", "0.3", "-W", "1", "-M", "do", "-s", strconv.Itoa(size), to)
}

// tcpThrough runs iperf3 TCP for 2 seconds and says what crossed; it
// must be something.
func tcpThrough(t *testing.T, from, to, addr string) string {
	t.Helper()
	gbps, retrans := iperfBetween(t, from, to, addr, 2)
	if gbps == 0 {
		t.Fatalf("TCP %s → %s moved nothing through the 1400-byte hop", from, to)
	}
	return fmt.Sprintf("%.2f Gbit/s, %d retransmits", gbps, retrans)
}

// TestPathMTU: with a 1400-byte hop on the path, grebpf does what ip_gre
// and ip6gre do: the WAN router's "frag needed" or "packet too big" about
// r1's outer packets lowers the tunnel's path MTU, and the next DF packet
// over it gets "frag needed" with the tunnel MTU (1400 − 24, or − 52 over
// the IPv6 WAN) sent to its sender, forwarded or local; r2 follows its
// own WAN MTU, lowered after attach. TCP crosses both ways, the senders
// learning as they go. In every decap mode and with the fast path, over
// either WAN.
func TestPathMTU(t *testing.T) {
	for _, wan := range []struct {
		lab      lab.Lab
		overhead int
	}{{lab.Default, 24}, {ipv6WAN, 52}} {
		for _, mode := range []struct {
			name        string
			lab, attach []string
		}{
			{"decap-xdp", nil, []string{"--decap", "xdp"}},
			{"decap-tc", nil, []string{"--decap", "tc"}},
			{"fastpath", []string{"--fastpath"}, []string{"--fastpath", "LAN"}},
		} {
			name := mode.name
			if wan.lab.WAN == lab.WANIPv6 {
				// Over IPv6, TC decap and the fast path's XDP: the ways
				// an ICMPv6 reaches pmtu_note.
				if mode.name == "decap-xdp" {
					continue
				}
				name = "ipv6-wan/" + name
			}
			// The tunnel MTU before the narrow hop, and through it.
			mtu, narrow := 1500-wan.overhead, 1400-wan.overhead
			t.Run(name, func(t *testing.T) {
				labUp(t, append(labArgs(wan.lab), mode.lab...)...)
				attachBothIn(t, wan.lab, mode.attach...)
				mustPing(t, "lan1", "172.16.200.1")
				narrowHop(t)

				// First, before any ping has taught anyone anything.
				t.Run("tcp", func(t *testing.T) {
					t.Logf("lan1 → lan2: %s", tcpThrough(t, "lan1", "lan2", "172.16.200.1"))
					t.Logf("lan2 → lan1: %s", tcpThrough(t, "lan2", "lan1", "172.16.100.1"))
					t.Logf("lan1 → lan2 over IPv6: %s", tcpThrough(t, "lan1", "lan2", "2001:db8:200::1"))
					t.Logf("lan2 → lan1 over IPv6: %s", tcpThrough(t, "lan2", "lan1", "2001:db8:100::1"))
				})
				t.Run("forwarded sender", func(t *testing.T) {
					in(t, "lan1", "ip", "route", "flush", "cache")
					r := dfPing(t, "lan1", "172.16.200.1", mtu-28)
					if want := fmt.Sprintf("Frag needed and DF set (mtu = %d)", narrow); !strings.Contains(r.out, "From 172.16.100.254") || !strings.Contains(r.out, want) {
						t.Errorf("%d-byte DF ping over a 1400-byte hop: want %q from r1, got:\n%s%s", mtu, want, r.out, r.stderr)
					}
					s := stats(t, "r1")
					if s.reason("path-mtu") == 0 || s.reason("frag-needed") == 0 {
						t.Errorf("r1 counted path-mtu %d, frag-needed %d: want both", s.reason("path-mtu"), s.reason("frag-needed"))
					}
					// Learned during the TCP test, a few seconds ago (more
					// under emulation).
					if mtu, left := pathMTUOf(t, "r1"); mtu != 1400 || left < 540 || left > 600 {
						t.Errorf("r1 shows path MTU %d for %ds more, want 1400 for about 600s", mtu, left)
					}
					if r := ping(t, "lan1", "172.16.200.1", "-M", "do", "-s", fmt.Sprint(narrow-28)); r.code != 0 {
						t.Errorf("%d-byte DF ping failed:\n%s%s", narrow, r.out, r.stderr)
					}
					// IPv6: "packet too big" with the same tunnel MTU.
					in(t, "lan1", "ip", "-6", "route", "flush", "cache")
					r = dfPing(t, "lan1", "2001:db8:200::1", mtu-48)
					if want := fmt.Sprintf("Packet too big: mtu=%d", narrow); !strings.Contains(r.out, "From 2001:db8:100::254") || !strings.Contains(r.out, want) {
						t.Errorf("%d-byte IPv6 ping over a 1400-byte hop: want %q from r1, got:\n%s%s", mtu, want, r.out, r.stderr)
					}
					if s := stats(t, "r1"); s.reason("packet-too-big") == 0 {
						t.Errorf("r1 counted no packet-too-big")
					}
					if r := ping(t, "lan1", "2001:db8:200::1", "-M", "do", "-s", fmt.Sprint(narrow-48)); r.code != 0 {
						t.Errorf("%d-byte IPv6 ping failed:\n%s%s", narrow, r.out, r.stderr)
					}
				})
				t.Run("sender on the router", func(t *testing.T) {
					r := dfPing(t, "r1", "172.16.200.1", mtu-28)
					if n := fmt.Sprint(narrow); !strings.Contains(r.out+r.stderr, "mtu="+n) && !strings.Contains(r.out, "mtu = "+n) {
						t.Errorf("r1's own DF ping: want told mtu %d, got:\n%s%s", narrow, r.out, r.stderr)
					}
					if got := in(t, "r1", "ip", "route", "get", "172.16.200.1"); !strings.Contains(got, fmt.Sprint("mtu ", narrow)) {
						t.Errorf("r1's route cache after the ICMP: %s, want mtu %d (as ip_gre leaves it)", got, narrow)
					}
					r = dfPing(t, "r1", "2001:db8:200::1", mtu-48)
					if n := fmt.Sprint(narrow); !strings.Contains(r.out+r.stderr, "mtu="+n) && !strings.Contains(r.out+r.stderr, "mtu: "+n) {
						t.Errorf("r1's own IPv6 ping: want told mtu %d, got:\n%s%s", narrow, r.out, r.stderr)
					}
					if got := in(t, "r1", "ip", "-6", "route", "get", "2001:db8:200::1"); !strings.Contains(got, fmt.Sprint("mtu ", narrow)) {
						t.Errorf("r1's IPv6 route cache after the ICMPv6: %s, want mtu %d", got, narrow)
					}
				})
				t.Run("wan mtu lowered after attach", func(t *testing.T) {
					in(t, "lan2", "ip", "route", "flush", "cache")
					r := dfPing(t, "lan2", "172.16.100.1", mtu-28)
					if want := fmt.Sprintf("Frag needed and DF set (mtu = %d)", narrow); !strings.Contains(r.out, "From 172.16.200.254") || !strings.Contains(r.out, want) {
						t.Errorf("%d-byte DF ping from lan2: want %q from r2, got:\n%s%s", mtu, want, r.out, r.stderr)
					}
					in(t, "lan2", "ip", "-6", "route", "flush", "cache")
					r = dfPing(t, "lan2", "2001:db8:100::1", mtu-48)
					if want := fmt.Sprintf("Packet too big: mtu=%d", narrow); !strings.Contains(r.out, "From 2001:db8:200::254") || !strings.Contains(r.out, want) {
						t.Errorf("%d-byte IPv6 ping from lan2: want %q from r2, got:\n%s%s", mtu, want, r.out, r.stderr)
					}
				})
			})
		}
	}
}

// TestPathMTUSysctls: the learned path MTU follows the namespace's
// net.ipv4.route sysctls as the kernel's does: never below min_pmtu, and
// gone after mtu_expires.
func TestPathMTUSysctls(t *testing.T) {
	labUp(t)
	in(t, "r1", "sysctl", "-qw", "net.ipv4.route.min_pmtu=1450", "net.ipv4.route.mtu_expires=3")
	attachBoth(t)
	mustPing(t, "lan1", "172.16.200.1")
	narrowHop(t)
	r := dfPing(t, "lan1", "172.16.200.1", 1448)
	if !strings.Contains(r.out, "Frag needed and DF set (mtu = 1426)") {
		t.Errorf("DF ping with min_pmtu 1450: want frag needed (mtu = 1426), got:\n%s%s", r.out, r.stderr)
	}
	if mtu, left := pathMTUOf(t, "r1"); mtu != 1450 || left > 3 {
		t.Errorf("r1 shows path MTU %d for %ds more, want the floor 1450 for at most 3s", mtu, left)
	}
	eventually(t, 5e9, func() string {
		if mtu, _ := pathMTUOf(t, "r1"); mtu != 0 {
			return "the path MTU has not expired after mtu_expires"
		}
		return ""
	})
}

// TestParityPMTU: through the same 1400-byte hop, the "frag needed" lan1
// gets for the same DF packet is byte for byte ip_gre's (but for the IP
// ID and header checksum), and so is the "packet too big" for the same
// IPv6 packet (but for the flow label); both routers show the path MTU,
// and a sender on r1 is told the same MTU.
func TestParityPMTU(t *testing.T) {
	needIPGRE(t)
	ip := &layers.IPv4{Version: 4, IHL: 5, TOS: 0xb8, Id: 0x2345, Flags: layers.IPv4DontFragment, TTL: 64,
		Protocol: layers.IPProtocolUDP, SrcIP: net.IPv4(172, 16, 100, 1), DstIP: net.IPv4(172, 16, 200, 1)}
	udp := &layers.UDP{SrcPort: 40002, DstPort: 9}
	udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	payload := make([]byte, 1476-28)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, udp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	big := bytes.Clone(buf.Bytes())
	ip6 := &layers.IPv6{Version: 6, TrafficClass: 0xb8, FlowLabel: 0x5a5a5, NextHeader: layers.IPProtocolUDP, HopLimit: 64,
		SrcIP: net.ParseIP("2001:db8:100::1"), DstIP: net.ParseIP("2001:db8:200::1")}
	udp6 := &layers.UDP{SrcPort: 40002, DstPort: 9}
	udp6.SetNetworkLayerForChecksum(ip6)
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip6, udp6, gopacket.Payload(payload[:1476-48])); err != nil {
		t.Fatal(err)
	}
	big6 := bytes.Clone(buf.Bytes())
	icmps, icmp6s := map[string][]byte{}, map[string][]byte{}
	for _, mode := range []string{"bpf", "kernel"} {
		t.Run(mode, func(t *testing.T) {
			labUp(t)
			attachBoth(t, modeArgs[mode]...)
			mustPing(t, "lan1", "172.16.200.1")
			mustPing(t, "lan1", "2001:db8:200::1")
			narrowHop(t)
			sendRaw(t, "lan1", big) // teaches r1 the path MTU
			time.Sleep(200 * time.Millisecond)
			icmps[mode] = captureOne(t, "lan1", "eth0", "icmp[0] = 3 and icmp[1] = 4", func() { sendRaw(t, "lan1", big) })
			icmp6s[mode] = captureOne(t, "lan1", "eth0", "icmp6 and ip6[40] = 2", func() { sendRaw(t, "lan1", big6) })
			if mtu, _ := pathMTUOf(t, "r1"); mtu != 1400 {
				t.Errorf("r1 shows path MTU %d, want 1400", mtu)
			}
			r := dfPing(t, "r1", "172.16.200.1", 1448)
			if !strings.Contains(r.out+r.stderr, "mtu=1376") && !strings.Contains(r.out, "mtu = 1376") {
				t.Errorf("r1's own DF ping: want told mtu 1376, got:\n%s%s", r.out, r.stderr)
			}
		})
	}
	b, k := icmps["bpf"], icmps["kernel"]
	if b == nil || k == nil {
		t.Fatal("no ICMP captured in one of the modes")
	}
	// Each mode had its own lab, so its own MAC addresses.
	if !bytes.Equal(maskIDAndChecksum(b)[12:], maskIDAndChecksum(k)[12:]) {
		t.Errorf("frag needed differs beyond MACs, IP ID and checksum\n   bpf %s\nkernel %s", hex.EncodeToString(b), hex.EncodeToString(k))
	}
	// The kernel labels the flow from a hash keyed at boot.
	b6, k6 := maskFlowLabel(icmp6s["bpf"]), maskFlowLabel(icmp6s["kernel"])
	if len(b6) < 62 || len(k6) < 62 || !bytes.Equal(b6[12:], k6[12:]) {
		t.Errorf("packet too big differs beyond MACs and flow label\n   bpf %s\nkernel %s", hex.EncodeToString(b6), hex.EncodeToString(k6))
	}
}

// maskFlowLabel zeroes the flow label of an IPv6 frame.
func maskFlowLabel(frame []byte) []byte {
	f := bytes.Clone(frame)
	if len(f) >= 18 {
		f[15] &= 0xf0
		f[16], f[17] = 0, 0
	}
	return f
}
