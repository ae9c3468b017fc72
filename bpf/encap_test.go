package bpf_test

import (
	"fmt"
	"net"
	"os"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/grebpf/grebpf/internal/testutil"
	"github.com/grebpf/grebpf/internal/tunnel"
)

// skbContext is struct __sk_buff as BPF_PROG_TEST_RUN takes it: only
// ifindex is set, so the program runs as if on that device.
type skbContext struct {
	_       [40]byte
	Ifindex uint32
	_       [148]byte
}

// wanNS builds, in a fresh namespace, the WAN side encap's fib lookup
// sees: wan0 (MAC macR1, 10.100.0.1/24) with the gateway 10.100.0.254 at
// macWAN as a permanent neighbour and a default route through it.
func wanNS(tb testing.TB, withNeigh bool) int {
	tb.Helper()
	testutil.NetNS(tb)
	// A router forwards; bpf_fib_lookup answers only where forwarding is on.
	must(tb, os.WriteFile("/proc/sys/net/ipv4/conf/all/forwarding", []byte("1"), 0))
	l := wanDevice(tb)
	must(tb, netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: wanLocal.AsSlice(), Mask: net.CIDRMask(24, 32)}}))
	if withNeigh {
		must(tb, netlink.NeighSet(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: unix.AF_INET,
			State: netlink.NUD_PERMANENT, IP: net.IPv4(10, 100, 0, 254), HardwareAddr: macWAN}))
	}
	must(tb, netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.IPv4(10, 100, 0, 254)}))
	return l.Attrs().Index
}

// wanDevice adds r1's WAN device to the test's namespace: wan0 (macR1)
// and its veth peer, both up, no address yet.
func wanDevice(tb testing.TB) netlink.Link {
	tb.Helper()
	must(tb, netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "wan0", HardwareAddr: macR1}, PeerName: "wan0p"}))
	l, err := netlink.LinkByName("wan0")
	must(tb, err)
	peer, err := netlink.LinkByName("wan0p")
	must(tb, err)
	must(tb, netlink.LinkSetUp(l))
	must(tb, netlink.LinkSetUp(peer))
	return l
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

// expectedEncap builds, independently of the program, the frame ip_gre
// would send for inner (IPv4, or IPv6: GRE type 0x86dd): outer IPv4 with
// DF, the given TTL/TOS and id, GRE with the optional key, MACs of the
// outer next hop.
func expectedEncap(tb testing.TB, inner []byte, id uint16, ttl, tos uint8, key *uint32) []byte {
	tb.Helper()
	eth := &layers.Ethernet{DstMAC: macWAN, SrcMAC: macR1, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, IHL: 5, TOS: tos, Id: id, Flags: layers.IPv4DontFragment, TTL: ttl,
		Protocol: layers.IPProtocolGRE, SrcIP: wanLocal.AsSlice(), DstIP: wanRemote.AsSlice()}
	gre := plainGRE()
	if key != nil {
		gre = keyedGRE(*key)
	}
	if inner[0]>>4 == 6 {
		gre.Protocol = layers.EthernetTypeIPv6
	}
	return serialize(tb, eth, ip, gre, gopacket.Payload(inner))
}

// withoutDF clears the outer DF bit of a frame expectedEncap built (and
// anyID ignores the checksum it leaves stale).
func withoutDF(frame []byte) []byte {
	frame[14+6] &^= 0x40
	return frame
}

// TestEncap: what the kernel routes into the tunnel leaves as ip_gre
// sends it, IPv4 or IPv6 inside (the traffic class taking the place of
// the TOS, the hop limit that of the TTL; no DF to copy with pmtudisc
// off).
func TestEncap(t *testing.T) {
	cases := []struct {
		name       string
		ipv6       bool
		key        *uint32
		ttl        uint8 // tunnel TTL; 0 inherits
		tos        int   // fixed tunnel TOS, -1 inherits
		noPMTUDisc bool
		innerTOS   uint8
		innerTTL   uint8
		wantTTL    uint8
		wantTOS    uint8
	}{
		{name: "plain", ttl: 64, tos: -1, innerTTL: 63, wantTTL: 64},
		{name: "keyed", key: u32(testKey), ttl: 64, tos: -1, innerTTL: 63, wantTTL: 64},
		{name: "tos inherit dscp", ttl: 64, tos: -1, innerTOS: 0xb8, innerTTL: 63, wantTTL: 64, wantTOS: 0xb8},
		{name: "tos inherit ecn ect1", ttl: 64, tos: -1, innerTOS: 0x01, innerTTL: 63, wantTTL: 64, wantTOS: 0x01},
		{name: "ecn ce becomes ect0", ttl: 64, tos: -1, innerTOS: 0xbb, innerTTL: 63, wantTTL: 64, wantTOS: 0xba},
		{name: "fixed tos keeps inner ecn", ttl: 64, tos: 0x20, innerTOS: 0xb9, innerTTL: 63, wantTTL: 64, wantTOS: 0x21},
		{name: "ttl inherit", ttl: 0, tos: -1, innerTTL: 17, wantTTL: 17},
		{name: "ttl fixed", ttl: 200, tos: -1, innerTTL: 5, wantTTL: 200},
		{name: "ipv6", ipv6: true, ttl: 64, tos: -1, innerTTL: 63, wantTTL: 64},
		{name: "ipv6 keyed", ipv6: true, key: u32(testKey), ttl: 64, tos: -1, innerTTL: 63, wantTTL: 64},
		{name: "ipv6 traffic class inherited", ipv6: true, ttl: 64, tos: -1, innerTOS: 0xb8, innerTTL: 63, wantTTL: 64, wantTOS: 0xb8},
		{name: "ipv6 ecn ce becomes ect0", ipv6: true, ttl: 64, tos: -1, innerTOS: 0xbb, innerTTL: 63, wantTTL: 64, wantTOS: 0xba},
		{name: "ipv6 fixed tos keeps inner ecn", ipv6: true, ttl: 64, tos: 0x20, innerTOS: 0xb9, innerTTL: 63, wantTTL: 64, wantTOS: 0x21},
		{name: "ipv6 hop limit inherited", ipv6: true, ttl: 0, tos: -1, innerTTL: 17, wantTTL: 17},
		{name: "ipv6 pmtudisc off: no DF", ipv6: true, ttl: 0, tos: -1, noPMTUDisc: true, innerTTL: 17, wantTTL: 17},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			link := tunnelDevs(t, wanNS(t, true))
			tun := testTunnel(c.key, link, tunnel.RPStrict)
			tun.TTL, tun.TOSInherit, tun.TOS, tun.NoPMTUDisc = c.ttl, c.tos < 0, uint8(max(c.tos, 0)), c.noPMTUDisc
			objs := loadOn(t, tun)
			inner := innerPacket(t, lan1Host, lan2Host, c.innerTOS, c.innerTTL)
			if c.ipv6 {
				inner = innerPacket6(t, lan1Host6, lan2Host6, c.innerTOS, c.innerTTL)
			}
			// As the kernel sends it out of gre1 (NOARP: to gre1's own MAC).
			in := frame(t, macTun, macTun, inner)
			for _, dev := range []uint32{link.PeerIfindex, link.Ifindex} {
				before := snapshot(t, &objs.GrebpfMaps)
				verdict, out := run(t, objs.EncapTc, in, skbContext{Ifindex: dev})
				reasons, moved := delta(before, snapshot(t, &objs.GrebpfMaps))
				if verdict != tcRedirect {
					t.Fatalf("on ifindex %d: verdict %d, want TC_ACT_REDIRECT (reasons %v)", dev, verdict, reasons)
				}
				if len(out) < 20 {
					t.Fatalf("short output %x", out)
				}
				id := uint16(out[18])<<8 | uint16(out[19]) // random, as ip_gre's
				want := expectedEncap(t, inner, id, c.wantTTL, c.wantTOS, c.key)
				if c.noPMTUDisc {
					want = anyID(withoutDF(want))
					out = anyID(out)
				}
				if d := diff(out, want); d != "" {
					t.Errorf("on ifindex %d: encapsulated frame:%s", dev, d)
				}
				if len(reasons) != 0 || moved != (tunnel.Counters{TxPackets: 1, TxBytes: uint64(len(inner))}) {
					t.Errorf("on ifindex %d: counters moved %v %+v, want tx 1 packet %d bytes only", dev, reasons, moved, len(inner))
				}
			}
		})
	}
}

func TestEncapDrops(t *testing.T) {
	ipv4 := func(tb testing.TB) []byte {
		return frame(tb, macTun, macTun, innerPacket(tb, lan1Host, lan2Host, 0, 63))
	}
	cases := []struct {
		name    string
		neigh   bool
		frame   func(tb testing.TB) []byte
		setup   func(tb testing.TB, link tunnel.Link)
		onWAN   bool // run on the WAN device, which is no tunnel's
		verdict uint32
		reason  string
	}{
		{name: "not a tunnel device", neigh: true, frame: ipv4, onWAN: true, verdict: tcShot, reason: "no-tunnel"},
		{name: "not ipv4", neigh: true, verdict: tcShot, reason: "unknown-inner", frame: func(tb testing.TB) []byte {
			return serialize(tb, &layers.Ethernet{DstMAC: layers.EthernetBroadcast, SrcMAC: macTun, EthernetType: layers.EthernetTypeARP},
				&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
					Operation: layers.ARPRequest, SourceHwAddress: macTun, SourceProtAddress: overlayR1.AsSlice(),
					DstHwAddress: make([]byte, 6), DstProtAddress: overlayR2.AsSlice()})
		}},
		{name: "no route to remote", neigh: true, frame: ipv4, verdict: tcShot, reason: "no-outer-route", setup: func(tb testing.TB, _ tunnel.Link) {
			must(tb, netlink.RouteDel(&netlink.Route{Dst: nil, Gw: net.IPv4(10, 100, 0, 254)}))
		}},
		// The outer packet never follows a route into a tunnel: with the
		// only route to the remote through gre1, there is none.
		{name: "default route through the tunnel", neigh: true, frame: ipv4, verdict: tcShot, reason: "no-outer-route", setup: func(tb testing.TB, link tunnel.Link) {
			must(tb, netlink.RouteDel(&netlink.Route{Dst: nil, Gw: net.IPv4(10, 100, 0, 254)}))
			must(tb, netlink.RouteAdd(&netlink.Route{LinkIndex: int(link.Ifindex), Scope: netlink.SCOPE_LINK, Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}}))
		}},
		// ... and with a more specific route to the remote via the WAN,
		// that one carries it.
		{name: "default through the tunnel, remote via the WAN", neigh: true, frame: ipv4, verdict: tcRedirect, setup: func(tb testing.TB, link tunnel.Link) {
			must(tb, netlink.RouteDel(&netlink.Route{Dst: nil, Gw: net.IPv4(10, 100, 0, 254)}))
			must(tb, netlink.RouteAdd(&netlink.Route{LinkIndex: int(link.Ifindex), Scope: netlink.SCOPE_LINK, Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}}))
			must(tb, netlink.RouteAdd(&netlink.Route{Dst: &net.IPNet{IP: wanRemote.AsSlice(), Mask: net.CIDRMask(32, 32)}, Gw: net.IPv4(10, 100, 0, 254)}))
		}},
		// The WAN MTU lowered under the tunnel's: the helper's MTU check
		// (tot_len 0) refuses the outer packet.
		{name: "outer packet over the WAN MTU", neigh: true, verdict: tcShot, reason: "outer-too-big", frame: func(tb testing.TB) []byte {
			ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 63, Protocol: layers.IPProtocolUDP, SrcIP: lan1Host, DstIP: lan2Host}
			return frame(tb, macTun, macTun, serialize(tb, ip, gopacket.Payload(make([]byte, 200))))
		}, setup: func(tb testing.TB, link tunnel.Link) {
			wan, err := netlink.LinkByIndex(int(link.WANIfindex))
			must(tb, err)
			must(tb, netlink.LinkSetMTU(wan, 68))
		}},
		// No neighbour for the gateway: bpf_redirect_neigh resolves it, as
		// the stack would. Not a drop, so no reason moves.
		{name: "unresolved next hop", neigh: false, frame: ipv4, verdict: tcRedirect},
		// A host that does not forward: bpf_fib_lookup refuses, and encap
		// hands the outer packet to bpf_redirect_neigh to route.
		{name: "forwarding off", neigh: true, frame: ipv4, verdict: tcRedirect, setup: func(tb testing.TB, _ tunnel.Link) {
			must(tb, os.WriteFile("/proc/sys/net/ipv4/conf/all/forwarding", []byte("0"), 0))
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wan := wanNS(t, c.neigh)
			link := tunnelDevs(t, wan)
			objs := loadOn(t, testTunnel(nil, link, tunnel.RPStrict))
			if c.setup != nil {
				c.setup(t, link)
			}
			dev := link.PeerIfindex
			if c.onWAN {
				dev = uint32(wan)
			}
			before := snapshot(t, &objs.GrebpfMaps)
			verdict, _ := run(t, objs.EncapTc, c.frame(t), skbContext{Ifindex: dev})
			reasons, _ := delta(before, snapshot(t, &objs.GrebpfMaps))
			if verdict != c.verdict {
				t.Errorf("verdict %d, want %d", verdict, c.verdict)
			}
			if c.reason == "" && len(reasons) != 0 || c.reason != "" && (len(reasons) != 1 || reasons[c.reason] != 1) {
				t.Errorf("reasons moved %v, want %q", reasons, c.reason)
			}
		})
	}
}

// TestEncapNoPMTUDisc: with pmtudisc off the outer DF bit is the inner
// packet's, as ip_gre's nopmtudisc sends it; encap and the fast path alike.
func TestEncapNoPMTUDisc(t *testing.T) {
	for _, df := range []bool{true, false} {
		t.Run(fmt.Sprint("inner DF ", df), func(t *testing.T) {
			wan := wanNS(t, true)
			lan := lanSide(t, true)
			link := tunnelDevs(t, wan)
			tun := testTunnel(nil, link, tunnel.RPStrict)
			tun.TTL, tun.NoPMTUDisc = 0, true
			objs := loadOn(t, tun)
			inner := udpPacket(t, lan1Host, lan2Host, 0, 200, df)
			want := expectedEncap(t, inner, 0, 63, 0, nil)
			if !df {
				withoutDF(want)
			}
			verdict, out := run(t, objs.EncapTc, frame(t, macTun, macTun, inner), skbContext{Ifindex: link.PeerIfindex})
			if verdict != tcRedirect {
				t.Fatalf("encap verdict %d", verdict)
			}
			if d := diff(anyID(out), anyID(want)); d != "" {
				t.Errorf("encap:%s", d)
			}
			// The fast path forwards: TTL 63 becomes 62, outer TTL inherited.
			in := frame(t, macWAN, macLANHost, inner)
			verdict, out = run(t, objs.FastpathLan, in, xdpContext{DataEnd: uint32(len(in)), IngressIfindex: uint32(lan)})
			want = expectedEncap(t, withTTL(t, inner, 62), 0, 62, 0, nil)
			if !df {
				withoutDF(want)
			}
			if verdict != xdpRedirect {
				t.Fatalf("fast path verdict %d", verdict)
			}
			if d := diff(anyID(out), anyID(want)); d != "" {
				t.Errorf("fast path:%s", d)
			}
		})
	}
}

// TestEncapOKey: a tunnel sends its output key, whatever key it takes.
func TestEncapOKey(t *testing.T) {
	link := tunnelDevs(t, wanNS(t, true))
	tun := testTunnel(u32(5), link, tunnel.RPStrict)
	tun.OKey = u32(9)
	objs := loadOn(t, tun)
	inner := innerPacket(t, lan1Host, lan2Host, 0, 63)
	verdict, out := run(t, objs.EncapTc, frame(t, macTun, macTun, inner), skbContext{Ifindex: link.PeerIfindex})
	if verdict != tcRedirect {
		t.Fatalf("verdict %d", verdict)
	}
	if d := diff(anyID(out), anyID(expectedEncap(t, inner, 0, 64, 0, u32(9)))); d != "" {
		t.Errorf("encapsulated frame:%s", d)
	}
}

// TestEncapOSeq: a tunnel with oseq numbers its packets 0 up, after the
// key when it has one, as ip_gre does.
func TestEncapOSeq(t *testing.T) {
	for _, key := range []*uint32{nil, u32(testKey)} {
		t.Run(fmt.Sprint("keyed ", key != nil), func(t *testing.T) {
			link := tunnelDevs(t, wanNS(t, true))
			tun := testTunnel(key, link, tunnel.RPStrict)
			tun.OSeq = true
			objs := loadOn(t, tun)
			inner := innerPacket(t, lan1Host, lan2Host, 0, 63)
			for n := uint32(0); n < 3; n++ {
				verdict, out := run(t, objs.EncapTc, frame(t, macTun, macTun, inner), skbContext{Ifindex: link.PeerIfindex})
				if verdict != tcRedirect {
					t.Fatalf("verdict %d", verdict)
				}
				eth := &layers.Ethernet{DstMAC: macWAN, SrcMAC: macR1, EthernetType: layers.EthernetTypeIPv4}
				ip := &layers.IPv4{Version: 4, IHL: 5, Flags: layers.IPv4DontFragment, TTL: 64,
					Protocol: layers.IPProtocolGRE, SrcIP: wanLocal.AsSlice(), DstIP: wanRemote.AsSlice()}
				gre := &layers.GRE{Protocol: layers.EthernetTypeIPv4, SeqPresent: true, Seq: n}
				if key != nil {
					gre.KeyPresent, gre.Key = true, *key
				}
				if d := diff(anyID(out), anyID(serialize(t, eth, ip, gre, gopacket.Payload(inner)))); d != "" {
					t.Errorf("packet %d:%s", n, d)
				}
			}
		})
	}
}

// TestEncapOCsum: a tunnel with ocsum sends the GRE checksum over the GRE
// header and the inner packet, before the key and the sequence number, as
// ip_gre does; on the encap path and the fast path.
func TestEncapOCsum(t *testing.T) {
	for _, key := range []*uint32{nil, u32(testKey)} {
		t.Run(fmt.Sprint("keyed ", key != nil), func(t *testing.T) {
			wan := wanNS(t, true)
			lan := lanSide(t, true)
			link := tunnelDevs(t, wan)
			tun := testTunnel(key, link, tunnel.RPStrict)
			tun.OCsum, tun.OSeq = true, true
			objs := loadOn(t, tun)
			inner := udpPacket(t, lan1Host, lan2Host, 0, 301, true) // odd: the sum pads
			want := func(n uint32, l3 []byte, ttl uint8) []byte {
				eth := &layers.Ethernet{DstMAC: macWAN, SrcMAC: macR1, EthernetType: layers.EthernetTypeIPv4}
				ip := &layers.IPv4{Version: 4, IHL: 5, Flags: layers.IPv4DontFragment, TTL: ttl,
					Protocol: layers.IPProtocolGRE, SrcIP: wanLocal.AsSlice(), DstIP: wanRemote.AsSlice()}
				gre := &layers.GRE{Protocol: layers.EthernetTypeIPv4, ChecksumPresent: true, SeqPresent: true, Seq: n}
				if key != nil {
					gre.KeyPresent, gre.Key = true, *key
				}
				return serialize(t, eth, ip, gre, gopacket.Payload(l3))
			}
			verdict, out := run(t, objs.EncapTc, frame(t, macTun, macTun, inner), skbContext{Ifindex: link.PeerIfindex})
			if verdict != tcRedirect {
				t.Fatalf("encap verdict %d", verdict)
			}
			if d := diff(anyID(out), anyID(want(0, inner, 64))); d != "" {
				t.Errorf("encap:%s", d)
			}
			in := frame(t, macWAN, macLANHost, inner)
			verdict, out = run(t, objs.FastpathLan, in, xdpContext{DataEnd: uint32(len(in)), IngressIfindex: uint32(lan)})
			if verdict != xdpRedirect {
				t.Fatalf("fast path verdict %d", verdict)
			}
			if d := diff(anyID(out), anyID(want(1, withTTL(t, inner, 62), 64))); d != "" {
				t.Errorf("fast path:%s", d)
			}
		})
	}
}
