package test

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// linkCounters reads the kernel's packet counters of dev in ns.
func linkCounters(t *testing.T, ns, dev string) (rx, tx uint64) {
	t.Helper()
	read := func(name string) uint64 {
		v, err := strconv.ParseUint(strings.TrimSpace(in(t, ns, "cat", "/sys/class/net/"+dev+"/statistics/"+name)), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	return read("rx_packets"), read("tx_packets")
}

// The tunnel is an interface: it holds the overlay address point to point,
// tcpdump and ip -s link see the inner traffic, and any route through it
// is tunnelled, a default route included.
func TestTunnelInterface(t *testing.T) {
	labUp(t)
	attachBoth(t)

	addr := in(t, "r1", "ip", "-4", "-o", "addr", "show", "dev", "gre1")
	if !strings.Contains(addr, "inet 192.168.1.1 peer 192.168.1.2/32") {
		t.Fatalf("gre1 addresses: %s", addr)
	}
	if link := in(t, "r1", "ip", "link", "show", "gre1"); !strings.Contains(link, "mtu 1476") || !strings.Contains(link, "state UP") {
		t.Fatalf("gre1: %s", link)
	}

	t.Run("tcpdump and counters", func(t *testing.T) {
		req, rep, rx, tx := threePingsOnGre1(t)
		if req != 3 || rep != 3 {
			t.Errorf("tcpdump -i gre1 saw %d requests and %d replies, want 3 each", req, rep)
		}
		if rx < 3 || tx < 3 {
			t.Errorf("ip -s link gre1 moved rx %d tx %d, want at least 3 each", rx, tx)
		}
	})

	t.Run("ip route via the peer", func(t *testing.T) {
		in(t, "r2", "ip", "addr", "add", "10.50.0.1/24", "dev", "lo")
		in(t, "r1", "ip", "route", "add", "10.50.0.0/24", "via", "192.168.1.2")
		mustPing(t, "lan1", "10.50.0.1")
		if hops := traceroute(t, "lan1", "10.50.0.1", 4); strings.Join(hops, " ") != "172.16.100.254 10.50.0.1" {
			t.Errorf("traceroute lan1 → 10.50.0.1: %v", hops)
		}
	})

	t.Run("default route through the tunnel", func(t *testing.T) {
		// The remote keeps a more specific route through the WAN; then
		// everything else may go into the tunnel.
		in(t, "r1", "ip", "route", "add", "10.200.0.0/24", "via", "10.100.0.254", "dev", "wan1")
		in(t, "r1", "ip", "route", "replace", "default", "dev", "gre1")
		mustPing(t, "lan1", "172.16.200.1")
		in(t, "r2", "ip", "addr", "add", "10.60.0.1/24", "dev", "lo")
		mustPing(t, "lan1", "10.60.0.1") // through the default route only
		// Re-attaching with the default through the tunnel keeps working.
		if out := grebpf(t, attachArgs("r1")...); !strings.Contains(out, "nothing changed") {
			t.Errorf("re-attach: %s", out)
		}
		mustPing(t, "lan1", "10.60.0.1")
	})

	t.Run("a route that would carry the remote is refused", func(t *testing.T) {
		in(t, "r1", "ip", "route", "del", "10.200.0.0/24")
		in(t, "r1", "ip", "route", "replace", "default", "via", "10.100.0.254", "dev", "wan1")
		refused(t, "would carry tunnel gre1's own remote 10.200.0.1 into a tunnel", attachArgs("r1", "--route", "10.200.0.0/16")...)
	})
}

// A decapsulated packet whose inner source is not routed back through its
// tunnel is dropped and counted (strict, the default); loose lets any
// routable source in.
func TestInnerSourceCheck(t *testing.T) {
	for _, c := range []struct {
		rp      string
		deliver bool
	}{{"strict", false}, {"loose", true}} {
		t.Run(c.rp, func(t *testing.T) {
			labUp(t)
			grebpf(t, attachArgs("r2", "--rp-filter", c.rp)...)
			// Only grebpf's check: the kernel's own rp_filter stays off.
			in(t, "r2", "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.gre1.rp_filter=0")
			conn := listenUDP(t, "lan2", "172.16.200.1:9999")
			defer conn.Close()
			ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 63, Protocol: layers.IPProtocolUDP,
				SrcIP: net.IPv4(8, 8, 8, 8).To4(), DstIP: net.IPv4(172, 16, 200, 1).To4()}
			u := &layers.UDP{SrcPort: 40000, DstPort: 9999}
			u.SetNetworkLayerForChecksum(ip)
			buf := gopacket.NewSerializeBuffer()
			mustDo(t, gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, u, gopacket.Payload("from 8.8.8.8")))
			spoofed := buf.Bytes()
			genuine := udpTo9999(t, "from lan1")
			f := frameParts{eth: &layers.Ethernet{SrcMAC: macOf(t, "wan", "r2"), DstMAC: macOf(t, "r2", "wan2"), EthernetType: layers.EthernetTypeIPv4}}
			send := func(p []byte) {
				for _, fr := range outer(t, f, "10.100.0.1", &layers.GRE{Protocol: layers.EthernetTypeIPv4}, p, nil) {
					sendFrame(t, "wan", "r2", fr)
				}
			}
			before := stats(t, "r2").reason("inner-source")
			send(spoofed)
			if got := receive(conn, "from 8.8.8.8"); got != c.deliver {
				t.Errorf("inner source 8.8.8.8 delivered: %v, want %v", got, c.deliver)
			}
			if got, want := stats(t, "r2").reason("inner-source")-before, map[bool]uint64{true: 0, false: 1}[c.deliver]; got != want {
				t.Errorf("inner-source drops %d, want %d", got, want)
			}
			send(genuine)
			if !receive(conn, "from lan1") {
				t.Errorf("a packet from lan1 was not delivered")
			}
		})
	}
}

// A tunnel is known by its name: removing another tunnel, listed before
// it, leaves its interface, routes and counters alone.
func TestStableIdentity(t *testing.T) {
	labUp(t)
	grebpf(t, attachArgs("r2")...)
	dir := t.TempDir()
	two := filepath.Join(dir, "two.yaml")
	one := filepath.Join(dir, "one.yaml")
	gre1 := `  - name: gre1
    local: 10.100.0.1
    remote: 10.200.0.1
    overlay: 192.168.1.1
    peer: 192.168.1.2
    routes: [172.16.200.0/24]
`
	other := `  - name: branch
    local: 10.100.0.1
    remote: 10.200.0.77
    overlay: 192.168.7.1
    peer: 192.168.7.2
    routes: [172.16.77.0/24]
`
	mustDo(t, os.WriteFile(two, []byte("device: wan1\ntunnels:\n"+other+gre1), 0o600))
	mustDo(t, os.WriteFile(one, []byte("device: wan1\ntunnels:\n"+gre1), 0o600))
	grebpf(t, "--netns", "r1", "attach", "--config", two)
	idx := in(t, "r1", "cat", "/sys/class/net/gre1/ifindex")
	for range 5 {
		mustPing(t, "lan1", "172.16.200.1")
	}
	counters := func() (uint64, uint64) {
		var s statsJSON
		out := grebpf(t, "--netns", "r1", "stats", "--json", "--tunnel", "gre1")
		if err := json.Unmarshal([]byte(out), &s); err != nil || len(s.Tunnels) != 1 {
			t.Fatalf("stats: %v %s", err, out)
		}
		return s.Tunnels[0].TxPackets, s.Tunnels[0].RxPackets
	}
	tx, rx := counters()
	grebpf(t, "--netns", "r1", "attach", "--config", one)
	if tx2, rx2 := counters(); tx2 != tx || rx2 != rx || tx < 5 {
		t.Errorf("gre1 counters tx %d rx %d before, tx %d rx %d after removing another tunnel", tx, rx, tx2, rx2)
	}
	if idx2 := in(t, "r1", "cat", "/sys/class/net/gre1/ifindex"); idx2 != idx {
		t.Errorf("gre1 was made anew: ifindex %s, then %s", idx, idx2)
	}
	if r := execute(t, "ip", "-n", "r1", "link", "show", "branch"); r.code == 0 {
		t.Errorf("the removed tunnel's interface is still there")
	}
	mustPing(t, "lan1", "172.16.200.1")
}

// threePingsOnGre1 pings lan2 from lan1 three times and returns what
// tcpdump -i gre1 on r1 saw (echo requests, replies) and how far gre1's
// rx and tx packet counters moved.
func threePingsOnGre1(t *testing.T) (req, rep int, rx, tx uint64) {
	t.Helper()
	rx0, tx0 := linkCounters(t, "r1", "gre1")
	got := captureOn(t, "r1", "gre1", "icmp", func() {
		for range 3 {
			mustPing(t, "lan1", "172.16.200.1")
		}
	})
	for _, l := range got {
		req += strings.Count(l, "172.16.100.1 > 172.16.200.1: ICMP echo request")
		rep += strings.Count(l, "172.16.200.1 > 172.16.100.1: ICMP echo reply")
	}
	rx1, tx1 := linkCounters(t, "r1", "gre1")
	return req, rep, rx1 - rx0, tx1 - tx0
}

// --encap egress encapsulates on gre1's own egress: traffic flows and
// grebpf counts it, but the interface no longer sees what it sends
// (tcpdump and ip -s link show only the received side) — the trade the
// README states for the veth crossing it saves.
func TestEncapEgress(t *testing.T) {
	labUp(t)
	attachBoth(t, "--encap", "egress")
	var show struct{ Encap string }
	if err := json.Unmarshal([]byte(grebpf(t, "--netns", "r1", "show", "--json")), &show); err != nil || show.Encap != "egress" {
		t.Errorf("show --json says encap %q (%v), want egress", show.Encap, err)
	}
	sent0 := stats(t, "r1").Tunnels[0].TxPackets
	req, rep, rx, tx := threePingsOnGre1(t)
	if req != 0 || rep != 3 {
		t.Errorf("tcpdump -i gre1 saw %d requests and %d replies, want 0 and 3", req, rep)
	}
	if rx < 3 || tx != 0 {
		t.Errorf("ip -s link gre1 moved rx %d tx %d, want at least 3 and 0", rx, tx)
	}
	if sent := stats(t, "r1").Tunnels[0].TxPackets - sent0; sent < 3 {
		t.Errorf("grebpf stats counted %d packets sent, want at least 3", sent)
	}
	if hops := traceroute(t, "lan1", "172.16.200.1", 5); strings.Join(hops, " ") != "172.16.100.254 192.168.1.2 172.16.200.1" {
		t.Errorf("traceroute: %v", hops)
	}
	refused(t, "run grebpf detach first to change the attach mode", attachArgs("r1")...)
}

// Real routing daemons over the tunnel interface: FRR's BGP between the
// overlay addresses, and OSPF on gre1 (multicast hellos through the
// tunnel). Routes they learn carry traffic both ways; grebpf itself
// installs no LAN route here.
func TestRoutingDaemons(t *testing.T) {
	for _, d := range []string{"zebra", "bgpd", "ospfd"} {
		if _, err := os.Stat("/usr/lib/frr/" + d); err != nil {
			t.Fatalf("needs FRR (/usr/lib/frr/%s): install Debian's frr (make deps)", d)
		}
	}
	for _, proto := range []string{"bgp", "ospf"} {
		t.Run(proto, func(t *testing.T) {
			labUp(t)
			for _, r := range []string{"r2", "r1"} {
				args := attachArgs(r)
				grebpf(t, args[:len(args)-2]...) // no --route: the daemons bring them
			}
			in(t, "r2", "ip", "addr", "add", "10.50.0.1/24", "dev", "lo")
			conf := map[string]string{
				"bgp/r1": "router bgp 65001\n bgp router-id 192.168.1.1\n no bgp ebgp-requires-policy\n neighbor 192.168.1.2 remote-as 65002\n address-family ipv4 unicast\n  network 172.16.100.0/24\n exit-address-family\n",
				"bgp/r2": "router bgp 65002\n bgp router-id 192.168.1.2\n no bgp ebgp-requires-policy\n neighbor 192.168.1.1 remote-as 65001\n address-family ipv4 unicast\n  network 172.16.200.0/24\n  network 10.50.0.0/24\n exit-address-family\n",
				// gre1 is unnumbered (a /32 with a peer), which a network
				// statement does not match: OSPF is enabled per interface.
				"ospf/r1": ospfConf("192.168.1.1", "lan1"),
				"ospf/r2": ospfConf("192.168.1.2", "lan2"),
			}
			for _, r := range []string{"r1", "r2"} {
				startFRR(t, r, proto, conf[proto+"/"+r])
			}
			want := map[string]*regexp.Regexp{
				"r1": regexp.MustCompile(`172\.16\.200\.0/24 (nhid \d+ )?via 192\.168\.1\.2 dev gre1 proto ` + proto),
				"r2": regexp.MustCompile(`172\.16\.100\.0/24 (nhid \d+ )?via 192\.168\.1\.1 dev gre1 proto ` + proto),
			}
			for r, re := range want {
				eventually(t, 60*time.Second, func() string {
					if out := in(t, r, "ip", "route"); !re.MatchString(out) {
						return r + " has no " + re.String() + " route:\n" + out
					}
					return ""
				})
			}
			if proto == "bgp" {
				mustPing(t, "lan1", "10.50.0.1")
			}
			mustPing(t, "lan1", "172.16.200.1")
			mustPing(t, "lan2", "172.16.100.1")
			if hops := traceroute(t, "lan1", "172.16.200.1", 5); strings.Join(hops, " ") != "172.16.100.254 192.168.1.2 172.16.200.1" {
				t.Errorf("traceroute over %s routes: %v", proto, hops)
			}
		})
	}
}

// ospfConf is one router's OSPF: hellos every second on gre1, its LAN
// advertised but passive.
func ospfConf(routerID, lan string) string {
	return "interface gre1\n ip ospf area 0\n ip ospf network point-to-point\n ip ospf hello-interval 1\n ip ospf dead-interval 4\n" +
		"interface " + lan + "\n ip ospf area 0\n ip ospf passive\n" +
		"router ospf\n ospf router-id " + routerID + "\n"
}

// startFRR runs zebra and the protocol's daemon in router ns with config,
// as their own instance (sockets and pid files in a directory of the
// test's), and stops them when the test ends.
func startFRR(t *testing.T, ns, proto, config string) {
	t.Helper()
	// The daemons run as frr: a directory of their own they can write.
	dir, err := os.MkdirTemp("", "grebpf-frr")
	mustDo(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	mustDo(t, os.Chmod(dir, 0o777))
	conf := filepath.Join(dir, proto+"d.conf")
	mustDo(t, os.WriteFile(conf, []byte("hostname "+ns+"\n"+config), 0o644))
	mustDo(t, os.WriteFile(filepath.Join(dir, "zebra.conf"), []byte("hostname "+ns+"\n"), 0o644))
	zsock := filepath.Join(dir, "zserv.api")
	for _, d := range []struct{ name, conf string }{{"zebra", filepath.Join(dir, "zebra.conf")}, {proto + "d", conf}} {
		cmd := exec.Command("ip", "netns", "exec", ns, "/usr/lib/frr/"+d.name,
			"-f", d.conf, "-i", filepath.Join(dir, d.name+".pid"), "-z", zsock,
			"--vty_socket", dir, "-u", "frr", "-g", "frr", "-A", "127.0.0.1", "-P", "0")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatalf("start %s in %s: %v", d.name, ns, err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
		if d.name == "zebra" {
			eventually(t, 10*time.Second, func() string {
				if _, err := os.Stat(zsock); err != nil {
					return "zebra did not open " + zsock
				}
				return ""
			})
		}
	}
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
