package bpf_test

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/grebpf/grebpf/internal/testutil"
	"github.com/grebpf/grebpf/internal/tunnel"
	"github.com/grebpf/grebpf/maps"
)

// The WAN of `grebpf lab up --wan ipv6`: r1, r2 and r1's gateway.
var (
	wanLocal6   = netip.MustParseAddr("2001:db8:ffff:100::1")
	wanRemote6  = netip.MustParseAddr("2001:db8:ffff:200::1")
	wanGateway6 = net.ParseIP("2001:db8:ffff:100::254")
)

// ip6greEncapLimit is ip6gre's default tunnel encapsulation limit.
const ip6greEncapLimit = 4

// wanNS6 is wanNS with an IPv6 WAN: wan0 (macR1, 2001:db8:ffff:100::1/64),
// the gateway ::254 at macWAN as a permanent neighbour unless withNeigh is
// false, and the IPv6 default route through it. Both families forward.
func wanNS6(tb testing.TB, withNeigh bool) int {
	tb.Helper()
	testutil.NetNS(tb)
	for _, f := range []string{"/proc/sys/net/ipv4/conf/all/forwarding", "/proc/sys/net/ipv6/conf/all/forwarding"} {
		must(tb, os.WriteFile(f, []byte("1"), 0))
	}
	l := wanDevice(tb)
	must(tb, netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: wanLocal6.AsSlice(), Mask: net.CIDRMask(64, 128)}, Flags: unix.IFA_F_NODAD}))
	if withNeigh {
		must(tb, netlink.NeighSet(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: unix.AF_INET6,
			State: netlink.NUD_PERMANENT, IP: wanGateway6, HardwareAddr: macWAN}))
	}
	must(tb, netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: wanGateway6,
		Dst: &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}}))
	return l.Attrs().Index
}

// testTunnel6 is testTunnel over the IPv6 WAN, with ip6gre's defaults.
func testTunnel6(key *uint32, link tunnel.Link, rp tunnel.RPFilter) tunnel.Tunnel {
	t := testTunnel(key, link, rp)
	t.Local, t.Remote, t.EncapLimit, t.MTU = wanLocal6, wanRemote6, ip6greEncapLimit, 1448
	return t
}

// encapLimitOption is the destination options header ip6gre puts before
// GRE: next header GRE, length 0 (8 bytes), the tunnel encapsulation
// limit option (type 4, length 1, the limit), PadN with one byte.
func encapLimitOption(limit uint8) []byte { return []byte{47, 0, 4, 1, limit, 1, 1, 0} }

// outer6Frame is an Ethernet frame of outer IPv6 from src to dst carrying
// GRE g and inner, after ip6gre's destination options unless limit < 0.
func outer6Frame(tb testing.TB, dstMAC, srcMAC net.HardwareAddr, src, dst netip.Addr, flow uint32, hop, tclass uint8,
	limit int, g *layers.GRE, inner []byte) []byte {
	tb.Helper()
	if inner[0]>>4 == 6 {
		g.Protocol = layers.EthernetTypeIPv6
	}
	payload := serialize(tb, g, gopacket.Payload(inner))
	ip := &layers.IPv6{Version: 6, TrafficClass: tclass, FlowLabel: flow, NextHeader: layers.IPProtocolGRE, HopLimit: hop,
		SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	if limit >= 0 {
		ip.NextHeader = layers.IPProtocolIPv6Destination
		payload = append(encapLimitOption(uint8(limit)), payload...)
	}
	eth := &layers.Ethernet{DstMAC: dstMAC, SrcMAC: srcMAC, EthernetType: layers.EthernetTypeIPv6}
	return serialize(tb, eth, ip, gopacket.Payload(payload))
}

// expectedEncap6 builds, independently of the program, the frame ip6gre
// would send for inner: r1 to r2 over the IPv6 WAN to the gateway's MAC.
func expectedEncap6(tb testing.TB, inner []byte, flow uint32, hop, tclass uint8, key *uint32, limit int) []byte {
	g := plainGRE()
	if key != nil {
		g = keyedGRE(*key)
	}
	return outer6Frame(tb, macWAN, macR1, wanLocal6, wanRemote6, flow, hop, tclass, limit, g, inner)
}

// fromR2v6 is a GRE frame r2 sends r1 over the IPv6 WAN.
func fromR2v6(tb testing.TB, limit int, g *layers.GRE, inner []byte) []byte {
	return outer6Frame(tb, macR1, macWAN, wanRemote6, wanLocal6, 0x5678, 64, 0, limit, g, inner)
}

// TestEncapOuterIPv6: a tunnel with IPv6 outer addresses sends what
// ip6gre sends, IPv4 or IPv6 inside: the traffic class is the inner one
// as it is (ECN CE included) or the fixed one whole, as ip6gre has no
// INET_ECN_encapsulate; the hop limit follows the TTL rule; the encapsulation limit option
// comes before GRE unless the tunnel has none, and the flow label is
// one flow's (the flow hash, which only the kernel knows, makes it). The
// encap path on both of the tunnel's devices and the fast path alike.
func TestEncapOuterIPv6(t *testing.T) {
	cases := []struct {
		name     string
		ipv6     bool
		key      *uint32
		limit    int   // -1: encaplimit none
		ttl      uint8 // tunnel hop limit; 0 inherits
		tos      int   // fixed traffic class, -1 inherits
		innerTOS uint8
		innerTTL uint8
		wantHop  uint8 // on the encap path; the fast path forwards first
		wantTC   uint8
	}{
		{name: "ipv4 inside", limit: 4, ttl: 64, tos: -1, innerTTL: 63, wantHop: 64},
		{name: "ipv6 inside", ipv6: true, limit: 4, ttl: 64, tos: -1, innerTTL: 63, wantHop: 64},
		{name: "keyed", key: u32(testKey), limit: 4, ttl: 64, tos: -1, innerTTL: 63, wantHop: 64},
		{name: "encaplimit none", limit: -1, ttl: 64, tos: -1, innerTTL: 63, wantHop: 64},
		{name: "ipv6 encaplimit none", ipv6: true, limit: -1, ttl: 64, tos: -1, innerTTL: 63, wantHop: 64},
		{name: "encaplimit 0", limit: 0, ttl: 64, tos: -1, innerTTL: 63, wantHop: 64},
		{name: "hop limit inherited, ecn ce kept", limit: 4, ttl: 0, tos: -1, innerTOS: 0xbb, innerTTL: 17, wantHop: 17, wantTC: 0xbb},
		{name: "ipv6 traffic class inherited", ipv6: true, limit: 4, ttl: 64, tos: -1, innerTOS: 0xb8, innerTTL: 63, wantHop: 64, wantTC: 0xb8},
		{name: "fixed traffic class sent whole", limit: 4, ttl: 64, tos: 0x20, innerTOS: 0xb9, innerTTL: 63, wantHop: 64, wantTC: 0x20},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wan := wanNS6(t, true)
			lan := lanSide(t, true)
			link := tunnelDevs(t, wan)
			ipv6Side(t, link)
			tun := testTunnel6(c.key, link, tunnel.RPStrict)
			tun.EncapLimit, tun.TTL, tun.TOSInherit, tun.TOS = c.limit, c.ttl, c.tos < 0, uint8(max(c.tos, 0))
			objs := loadOn(t, tun)
			inner := innerPacket(t, lan1Host, lan2Host, c.innerTOS, c.innerTTL)
			forwarded := withTTL(t, inner, c.innerTTL-1)
			if c.ipv6 {
				inner = innerPacket6(t, lan1Host6, lan2Host6, c.innerTOS, c.innerTTL)
				forwarded = withHop(inner, c.innerTTL-1)
			}
			labels := map[uint32]bool{}
			for _, dev := range []uint32{link.PeerIfindex, link.Ifindex} {
				before := snapshot(t, &objs.GrebpfMaps)
				verdict, out := run(t, objs.EncapTc, frame(t, macTun, macTun, inner), skbContext{Ifindex: dev})
				reasons, moved := delta(before, snapshot(t, &objs.GrebpfMaps))
				if verdict != tcRedirect {
					t.Fatalf("on ifindex %d: verdict %d, want TC_ACT_REDIRECT (reasons %v)", dev, verdict, reasons)
				}
				labels[flowLabel(out)] = true
				if d := diff(out, expectedEncap6(t, inner, flowLabel(out), c.wantHop, c.wantTC, c.key, c.limit)); d != "" {
					t.Errorf("on ifindex %d: encapsulated frame:%s", dev, d)
				}
				if len(reasons) != 0 || moved != (tunnel.Counters{TxPackets: 1, TxBytes: uint64(len(inner))}) {
					t.Errorf("on ifindex %d: counters moved %v %+v, want tx 1 packet %d bytes only", dev, reasons, moved, len(inner))
				}
			}
			if len(labels) != 1 {
				t.Errorf("one flow took flow labels %v", labels)
			}

			in := frame(t, macWAN, macLANHost, inner)
			before := snapshot(t, &objs.GrebpfMaps)
			verdict, out := run(t, objs.FastpathLan, in, xdpContext{DataEnd: uint32(len(in)), IngressIfindex: uint32(lan)})
			reasons, moved := delta(before, snapshot(t, &objs.GrebpfMaps))
			if verdict != xdpRedirect {
				t.Fatalf("fast path: verdict %d, want XDP_REDIRECT (reasons %v)", verdict, reasons)
			}
			hop := c.wantHop
			if c.ttl == 0 {
				hop = c.innerTTL - 1
			}
			if d := diff(out, expectedEncap6(t, forwarded, flowLabel(out), hop, c.wantTC, c.key, c.limit)); d != "" {
				t.Errorf("fast path:%s", d)
			}
			if len(reasons) != 0 || moved != (tunnel.Counters{TxPackets: 1, TxBytes: uint64(len(inner))}) {
				t.Errorf("fast path: counters moved %v %+v, want tx 1 packet only", reasons, moved)
			}
		})
	}
}

// TestDecapOuterIPv6: GRE over IPv6 from the peer is decapsulated with or
// without ip6gre's destination options, IPv4 or IPv6 inside, RFC 6040
// applied from the traffic class; what is not GRE from a peer passes, and
// what the kernel would discard is dropped under its reason.
func TestDecapOuterIPv6(t *testing.T) {
	inner4 := innerPacket(t, lan2Host, lan1Host, 0x02, 63)
	inner6 := innerPacket6(t, lan2Host6, lan1Host6, 0x02, 63)
	withDstOpts := func(opts ...byte) func(tb testing.TB) []byte {
		return func(tb testing.TB) []byte {
			b := fromR2v6(tb, -1, plainGRE(), inner4)
			out := append(append(append([]byte(nil), b[:54]...), opts...), b[54:]...)
			out[20] = 60
			binary.BigEndian.PutUint16(out[18:], uint16(len(out)-54))
			return out
		}
	}
	cases := []struct {
		name   string
		key    *uint32
		frame  func(tb testing.TB) []byte
		inner  []byte // delivered; nil when reason is set
		reason string
	}{
		{name: "ipv4 inside, encapsulation limit", frame: func(tb testing.TB) []byte { return fromR2v6(tb, 4, plainGRE(), inner4) }, inner: inner4},
		{name: "ipv6 inside, encapsulation limit", frame: func(tb testing.TB) []byte { return fromR2v6(tb, 4, plainGRE(), inner6) }, inner: inner6},
		{name: "ipv4 inside, no options", frame: func(tb testing.TB) []byte { return fromR2v6(tb, -1, plainGRE(), inner4) }, inner: inner4},
		{name: "ipv6 inside, no options", frame: func(tb testing.TB) []byte { return fromR2v6(tb, -1, plainGRE(), inner6) }, inner: inner6},
		{name: "keyed", key: u32(testKey), frame: func(tb testing.TB) []byte { return fromR2v6(tb, 4, keyedGRE(testKey), inner4) }, inner: inner4},
		{name: "wrong key", key: u32(testKey), frame: func(tb testing.TB) []byte { return fromR2v6(tb, 4, keyedGRE(7), inner4) }, reason: "key-mismatch"},
		{name: "outer ce marks ect(0) ce", frame: func(tb testing.TB) []byte {
			b := fromR2v6(tb, 4, plainGRE(), inner4)
			b[15] |= 0x30 // traffic class ECN bits: CE
			return b
		}, inner: innerPacket(t, lan2Host, lan1Host, 0x03, 63)},
		{name: "longer destination options", frame: withDstOpts(47, 1, 4, 1, 4, 1, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0), inner: inner4},
		{name: "unknown option to discard on", frame: withDstOpts(47, 0, 0x85, 1, 0, 1, 1, 0), reason: "outer-options"},
		{name: "option past its header", frame: withDstOpts(47, 0, 1, 9, 0, 0, 0, 0), reason: "outer-options"},
		{name: "destination options too long to read", frame: withDstOpts(append([]byte{47, 8}, make([]byte, 70)...)...), reason: "outer-options"},
		{name: "unknown peer", frame: func(tb testing.TB) []byte {
			return outer6Frame(tb, macR1, macWAN, netip.MustParseAddr("2001:db8:ffff:300::1"), wanLocal6, 0, 64, 0, 4, plainGRE(), inner4)
		}, reason: "unknown-peer"},
		{name: "outer fragment", frame: func(tb testing.TB) []byte {
			b := fromR2v6(tb, -1, plainGRE(), inner4)
			out := append(append(append([]byte(nil), b[:54]...), 47, 0, 0, 1, 0, 0, 0, 9), b[54:]...) // first fragment, more follow
			out[20] = 44
			binary.BigEndian.PutUint16(out[18:], uint16(len(out)-54))
			return out
		}, reason: "outer-fragment"},
		{name: "payload length past the frame", frame: func(tb testing.TB) []byte {
			b := fromR2v6(tb, 4, plainGRE(), inner4)
			binary.BigEndian.PutUint16(b[18:], uint16(len(b)-54+1))
			return b
		}, reason: "truncated"},
		{name: "udp over ipv6", frame: func(tb testing.TB) []byte {
			return frame(tb, macR1, macWAN, udpPacket6(tb, wanRemote6.AsSlice(), wanLocal6.AsSlice(), 200))
		}, reason: "not-gre"},
		{name: "destination options before udp", frame: withDstOpts(17, 0, 1, 4, 0, 0, 0, 0), reason: "not-gre"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tun := testTunnel6(c.key, fakeLink, tunnel.RPOff)
			objs := loadOn(t, tun)
			for _, p := range decapProgs(objs) {
				p.expect(t, objs, c.frame(t), c.inner, c.reason)
			}
		})
	}
}

// TestPathMTULearnedIPv6: an ICMPv6 "packet too big" about one of our
// outer packets sets the path MTU, never below IPv6's minimum, as
// ip6gre's ip6_update_pmtu does, and passes on to the stack; one about
// anything else, or with a wrong checksum, teaches nothing.
func TestPathMTULearnedIPv6(t *testing.T) {
	inner := udpPacket(t, lan1Host, lan2Host, 0, 1400, true)
	ptb := func(mtu uint32, edit func(quote []byte)) func(tb testing.TB) []byte {
		return func(tb testing.TB) []byte {
			quote := expectedEncap6(tb, inner, 0x777, 64, 0, nil, ip6greEncapLimit)[14:]
			quote = quote[:1280-48]
			if edit != nil {
				edit(quote)
			}
			return packetTooBig(tb, macR1, macWAN, wanGateway6, wanLocal6.AsSlice(), 0, mtu, quote)
		}
	}
	cases := []struct {
		name  string
		frame func(tb testing.TB) []byte
		want  uint32 // the path MTU noted; 0: none
	}{
		{name: "about our packet", frame: ptb(1400, nil), want: 1400},
		{name: "below the minimum", frame: ptb(1000, nil), want: 1280},
		{name: "about another sender's packet", frame: ptb(1400, func(q []byte) { q[23] ^= 1 })},
		{name: "about a key we do not send", frame: ptb(1400, func(q []byte) { q[48] |= 0x20 })},
		{name: "bad checksum", frame: func(tb testing.TB) []byte {
			b := ptb(1400, nil)(tb)
			b[len(b)-1] ^= 0xff
			return b
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tun := testTunnel6(nil, fakeLink, tunnel.RPOff)
			objs := loadOn(t, tun)
			for _, p := range append(decapProgs(objs), decapProg{"fastpath", objs.FastpathWan, xdpPass, xdpDrop, xdpPass, true}) {
				objs.GrebpfMaps.PathMtus.Delete(pathKey(tun))
				in := c.frame(t)
				before := snapshot(t, &objs.GrebpfMaps)
				verdict, out := run(t, p.prog, in, nil)
				reasons, _ := delta(before, snapshot(t, &objs.GrebpfMaps))
				if verdict != p.pass {
					t.Errorf("%s: verdict %d, want pass", p.name, verdict)
				}
				if d := diff(out, in); d != "" {
					t.Errorf("%s: passed frame was changed:%s", p.name, d)
				}
				want := "path-mtu"
				if c.want == 0 {
					want = "not-gre"
				}
				if len(reasons) != 1 || reasons[want] != 1 {
					t.Errorf("%s: reasons moved %v, want %s", p.name, reasons, want)
				}
				mtu, _, ok := maps.PathMTU(&objs.GrebpfMaps, tun, monotonic(t))
				if c.want == 0 && ok || c.want != 0 && (!ok || mtu != c.want) {
					t.Errorf("%s: path MTU %d (%v), want %d", p.name, mtu, ok, c.want)
				}
			}
		})
	}
}

// TestEncapOuterIPv6TooBig: over an IPv6 WAN every inner packet that does
// not fit is answered, as ip6gre answers it: IPv4 with "fragmentation
// needed" whatever its DF bit, IPv6 with "packet too big" carrying the
// tunnel MTU raised to IPv6's minimum.
func TestEncapOuterIPv6TooBig(t *testing.T) {
	cases := []struct {
		name  string
		pmtu  uint32
		inner func(tb testing.TB) []byte
		want  uint32 // the MTU the error carries; 0: encapsulated
	}{
		{name: "ipv4 with DF", pmtu: 1400, want: 1348, inner: func(tb testing.TB) []byte { return udpPacket(tb, lan1Host, lan2Host, 0, 1349, true) }},
		{name: "ipv4 without DF", pmtu: 1400, want: 1348, inner: func(tb testing.TB) []byte { return udpPacket(tb, lan1Host, lan2Host, 0, 1349, false) }},
		{name: "ipv4 exactly fits", pmtu: 1400, inner: func(tb testing.TB) []byte { return udpPacket(tb, lan1Host, lan2Host, 0, 1348, false) }},
		{name: "ipv6", pmtu: 1400, want: 1348, inner: udp6From(lan1Host6, 1349)},
		{name: "ipv6 exactly fits", pmtu: 1400, inner: udp6From(lan1Host6, 1348)},
		{name: "ipv6 tunnel mtu raised to 1280", pmtu: 1300, want: 1280, inner: udp6From(lan1Host6, 1281)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wan := wanNS6(t, true)
			lan := lanSide(t, true)
			link := tunnelDevs(t, wan)
			ipv6Side(t, link)
			tun := testTunnel6(nil, link, tunnel.RPStrict)
			objs := loadOn(t, tun)
			m := &objs.GrebpfMaps
			must(t, maps.SetICMPSources(m, ipv6Sources(lanAddrs(t), lan, link)))
			setPathMTU(t, m, tun, c.pmtu, pmtuExpires)
			inner := c.inner(t)
			v6 := inner[0]>>4 == 6
			before := snapshot(t, m)
			verdict, out := run(t, objs.EncapTc, frame(t, macTun, macTun, inner), skbContext{Ifindex: link.PeerIfindex})
			reasons, moved := delta(before, snapshot(t, m))
			if verdict != tcRedirect {
				t.Fatalf("verdict %d (reasons %v)", verdict, reasons)
			}
			switch {
			case c.want == 0:
				if len(reasons) != 0 || moved.TxPackets != 1 {
					t.Errorf("counters %v %+v: want encapsulated and sent", reasons, moved)
				}
				if d := diff(out, expectedEncap6(t, inner, flowLabel(out), 64, 0, nil, ip6greEncapLimit)); d != "" {
					t.Errorf("encapsulated frame:%s", d)
				}
			case v6:
				if len(reasons) != 1 || reasons["packet-too-big"] != 1 {
					t.Errorf("counters %v: want packet-too-big", reasons)
				}
				want := packetTooBig(t, macLANHost, macWAN, r1LAN6.AsSlice(), inner[8:24], flowLabel(out), c.want, inner[:min(len(inner), 1280-48)])
				if d := diff(out, want); d != "" {
					t.Errorf("ICMPv6:%s", d)
				}
			default:
				if len(reasons) != 1 || reasons["frag-needed"] != 1 {
					t.Errorf("counters %v: want frag-needed", reasons)
				}
				want := fragNeeded(t, macLANHost, macWAN, net.IPv4(172, 16, 100, 254).To4(), inner[12:16], 0xc0, uint16(c.want), inner[:min(len(inner), 548)])
				if d := diff(anyID(out), anyID(want)); d != "" {
					t.Errorf("ICMP:%s", d)
				}
			}
		})
	}
}
