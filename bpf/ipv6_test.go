package bpf_test

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/grebpf/grebpf/internal/tunnel"
	"github.com/grebpf/grebpf/maps"
)

// The lab's IPv6: the LANs, r1's LAN address and the tunnel's overlay.
var (
	lan1Host6  = net.ParseIP("2001:db8:100::1")
	lan2Host6  = net.ParseIP("2001:db8:200::1")
	r1LAN6     = netip.MustParseAddr("2001:db8:100::254")
	overlay6R1 = netip.MustParseAddr("fd00:1::1")
	overlay6R2 = netip.MustParseAddr("fd00:1::2")
)

func greIPv6() *layers.GRE { return &layers.GRE{Protocol: layers.EthernetTypeIPv6} }

// innerPacket6 is an ICMPv6 echo between the LANs, IPv6 header included.
func innerPacket6(tb testing.TB, src, dst net.IP, tclass, hop uint8) []byte {
	tb.Helper()
	ip := &layers.IPv6{Version: 6, TrafficClass: tclass, FlowLabel: 0x12345, NextHeader: layers.IPProtocolICMPv6,
		HopLimit: hop, SrcIP: src, DstIP: dst}
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeEchoRequest, 0)}
	must(tb, icmp.SetNetworkLayerForChecksum(ip))
	return serialize(tb, ip, icmp, &layers.ICMPv6Echo{Identifier: 7, SeqNumber: 1}, gopacket.Payload("grebpf test payload"))
}

// udpPacket6 is an IPv6 UDP packet of size bytes from src to dst.
func udpPacket6(tb testing.TB, src, dst net.IP, size int) []byte {
	tb.Helper()
	ip := &layers.IPv6{Version: 6, FlowLabel: 0x12345, NextHeader: layers.IPProtocolUDP, HopLimit: 63, SrcIP: src, DstIP: dst}
	udp := &layers.UDP{SrcPort: 4000, DstPort: 5000}
	must(tb, udp.SetNetworkLayerForChecksum(ip))
	payload := make([]byte, size-40-8)
	for i := range payload {
		payload[i] = byte(i)
	}
	return serialize(tb, ip, udp, gopacket.Payload(payload))
}

// withHop returns a copy of an IPv6 packet with another hop limit.
func withHop(pkt []byte, hop uint8) []byte {
	out := append([]byte(nil), pkt...)
	out[7] = hop
	return out
}

// ipv6Side gives wanNS + lanSide + tunnelDevs's namespace its IPv6: IPv6
// forwarding, 2001:db8:200::/64 routed through gre1 (link), and on lan0
// 2001:db8:100::254/64 with the host 2001:db8:100::1 at macLANHost.
func ipv6Side(tb testing.TB, link tunnel.Link) {
	tb.Helper()
	must(tb, os.WriteFile("/proc/sys/net/ipv6/conf/all/forwarding", []byte("1"), 0))
	lan, err := netlink.LinkByName("lan0")
	must(tb, err)
	must(tb, netlink.AddrAdd(lan, &netlink.Addr{IPNet: &net.IPNet{IP: r1LAN6.AsSlice(), Mask: net.CIDRMask(64, 128)}, Flags: unix.IFA_F_NODAD}))
	must(tb, netlink.NeighSet(&netlink.Neigh{LinkIndex: lan.Attrs().Index, Family: unix.AF_INET6,
		State: netlink.NUD_PERMANENT, IP: lan1Host6, HardwareAddr: macLANHost}))
	gre, err := netlink.LinkByIndex(int(link.Ifindex))
	must(tb, err)
	host := func(a netip.Addr) *net.IPNet { return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(128, 128)} }
	must(tb, netlink.AddrAdd(gre, &netlink.Addr{IPNet: host(overlay6R1), Peer: host(overlay6R2), Flags: unix.IFA_F_NODAD}))
	must(tb, netlink.RouteAdd(&netlink.Route{LinkIndex: gre.Attrs().Index, Dst: &net.IPNet{IP: lan2Host6.Mask(net.CIDRMask(64, 128)), Mask: net.CIDRMask(64, 128)}}))
}

// ipv6Sources is what the loader gives the programs as ICMP sources in
// ipv6Side's namespace: v4 for IPv4, lan0's and gre1's IPv6 addresses.
func ipv6Sources(v4 map[uint32]netip.Addr, lan int, link tunnel.Link) maps.ICMPSources {
	return maps.ICMPSources{V4: v4, V6: map[uint32]netip.Addr{uint32(lan): r1LAN6, link.Ifindex: overlay6R1},
		Local6: []netip.Addr{r1LAN6, overlay6R1}}
}

// TestDecapIPv6: GRE type 0x86dd carries IPv6, delivered to the tunnel
// interface as an IPv6 frame; its header is checked as IPv4's is.
func TestDecapIPv6(t *testing.T) {
	inner := innerPacket6(t, lan2Host6, lan1Host6, 0, 63)
	cases := []struct {
		name   string
		inner  []byte
		reason string // "" delivered
	}{
		{name: "delivered", inner: inner},
		{name: "payload length past the packet", inner: func() []byte {
			b := append([]byte(nil), inner...)
			binary.BigEndian.PutUint16(b[4:], uint16(len(b)-40+1))
			return b
		}(), reason: "truncated"},
		{name: "header cut short", inner: inner[:39], reason: "truncated"},
		{name: "IPv4 under type 0x86dd", inner: innerPacket(t, lan2Host, lan1Host, 0, 63), reason: "unknown-inner"},
		{name: "trailing bytes after the payload length", inner: append(append([]byte(nil), inner...), 0, 0, 0, 0)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			objs := load(t, nil)
			in := greFrame(t, wanRemote, wanLocal, greIPv6(), c.inner)
			for _, p := range decapProgs(objs) {
				before := snapshot(t, &objs.GrebpfMaps)
				verdict, out := run(t, p.prog, in, nil)
				reasons, moved := delta(before, snapshot(t, &objs.GrebpfMaps))
				if c.reason != "" {
					if verdict != p.drop || len(reasons) != 1 || reasons[c.reason] != 1 || moved != (tunnel.Counters{}) {
						t.Errorf("%s: verdict %d, counters %v %+v; want dropped as %s", p.name, verdict, reasons, moved, c.reason)
					}
					continue
				}
				want := p.output(t, fakeLink.Ifindex, c.inner)
				if verdict != p.delivered || len(reasons) != 0 || moved != (tunnel.Counters{RxPackets: 1, RxBytes: uint64(len(inner))}) {
					t.Errorf("%s: verdict %d, counters %v %+v; want delivered, rx 1 packet %d bytes", p.name, verdict, reasons, moved, len(inner))
				}
				if d := diff(out, want); d != "" {
					t.Errorf("%s: delivered frame:%s", p.name, d)
				}
			}
		})
	}
}

// TestDecapIPv6ECN: RFC 6040 on the traffic class, every outer × inner
// combination, through each decap path, the fast path forwarding to the
// LAN with the hop limit one less.
func TestDecapIPv6ECN(t *testing.T) {
	const notECT, ect1, ect0, ce = 0, 1, 2, 3
	wan := wanNS(t, true)
	lanSide(t, true)
	link := tunnelDevs(t, wan)
	ipv6Side(t, link)
	objs := loadOn(t, testTunnel(nil, link, tunnel.RPStrict))
	progs := append(decapProgs(objs), decapProg{"fastpath", objs.FastpathWan, xdpPass, xdpDrop, xdpRedirect, false})
	for outer := uint8(0); outer < 4; outer++ {
		for innerECN := uint8(0); innerECN < 4; innerECN++ {
			want, drop := innerECN, false
			switch {
			case innerECN == notECT && outer == ce:
				drop = true
			case innerECN != notECT && outer == ce:
				want = ce
			case innerECN == ect0 && outer == ect1:
				want = ect1
			}
			name := fmt.Sprintf("outer ECN %d, inner ECN %d", outer, innerECN)
			in := greFrame(t, wanRemote, wanLocal, greIPv6(), innerPacket6(t, lan2Host6, lan1Host6, 0xb8|innerECN, 63))
			in[15] = 0x20 | outer
			refreshOuterChecksum(in)
			delivered := innerPacket6(t, lan2Host6, lan1Host6, 0xb8|want, 63)
			for _, p := range progs {
				before := snapshot(t, &objs.GrebpfMaps)
				verdict, out := run(t, p.prog, in, nil)
				reasons, moved := delta(before, snapshot(t, &objs.GrebpfMaps))
				if drop {
					if verdict != p.drop || len(reasons) != 1 || reasons["ecn-not-ect"] != 1 || moved != (tunnel.Counters{}) {
						t.Errorf("%s, %s: verdict %d, counters %v %+v; want dropped under ecn-not-ect", name, p.name, verdict, reasons, moved)
					}
					continue
				}
				wantFrame := p.output(t, link.Ifindex, delivered)
				if p.name == "fastpath" {
					wantFrame = frame(t, macLANHost, macWAN, withHop(delivered, 62))
				}
				if verdict != p.delivered || len(reasons) != 0 || moved.RxPackets != 1 {
					t.Errorf("%s, %s: verdict %d, counters %v %+v; want delivered", name, p.name, verdict, reasons, moved)
				}
				if d := diff(out, wantFrame); d != "" {
					t.Errorf("%s, %s: delivered frame:%s", name, p.name, d)
				}
			}
		}
	}
}

// TestDecapIPv6InnerSource: the inner source check against the IPv6 FIB;
// a link-local source is the tunnel link's own.
func TestDecapIPv6InnerSource(t *testing.T) {
	cases := []struct {
		name string
		rp   tunnel.RPFilter
		src  net.IP
		ok   bool
	}{
		{"strict, routed back through the tunnel", tunnel.RPStrict, lan2Host6, true},
		{"strict, the peer's overlay address", tunnel.RPStrict, overlay6R2.AsSlice(), true},
		{"strict, link-local", tunnel.RPStrict, net.ParseIP("fe80::2"), true},
		{"strict, routed back through the LAN", tunnel.RPStrict, net.ParseIP("2001:db8:100::9"), false},
		{"strict, no route back", tunnel.RPStrict, net.ParseIP("2001:db8:999::1"), false},
		{"loose, routed back through the LAN", tunnel.RPLoose, net.ParseIP("2001:db8:100::9"), true},
		{"loose, no route back", tunnel.RPLoose, net.ParseIP("2001:db8:999::1"), false},
		{"off, no route back", tunnel.RPOff, net.ParseIP("2001:db8:999::1"), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wan := wanNS(t, true)
			lanSide(t, true)
			link := tunnelDevs(t, wan)
			ipv6Side(t, link)
			objs := loadOn(t, testTunnel(nil, link, c.rp))
			inner := innerPacket6(t, c.src, lan1Host6, 0, 63)
			in := greFrame(t, wanRemote, wanLocal, greIPv6(), inner)
			for _, p := range decapProgs(objs) {
				before := snapshot(t, &objs.GrebpfMaps)
				verdict, out := run(t, p.prog, in, nil)
				reasons, moved := delta(before, snapshot(t, &objs.GrebpfMaps))
				if c.ok {
					want := p.output(t, link.Ifindex, inner)
					if verdict != p.delivered || diff(out, want) != "" || len(reasons) != 0 || moved.RxPackets != 1 {
						t.Errorf("%s: verdict %d, counters %v %+v, frame%s; want delivered to gre1", p.name, verdict, reasons, moved, diff(out, want))
					}
					continue
				}
				if verdict != p.drop || len(reasons) != 1 || reasons["inner-source"] != 1 || moved != (tunnel.Counters{}) {
					t.Errorf("%s: verdict %d, counters %v %+v; want dropped as inner-source", p.name, verdict, reasons, moved)
				}
			}
		})
	}
}

// expectedEncap6 is what ip_gre sends for an inner IPv6 packet: GRE type
// 0x86dd; DF set unless pmtudisc is off (IPv6 has no DF to copy).
func expectedEncap6(tb testing.TB, inner []byte, id uint16, ttl, tos uint8, key *uint32, df bool) []byte {
	tb.Helper()
	eth := &layers.Ethernet{DstMAC: macWAN, SrcMAC: macR1, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, IHL: 5, TOS: tos, Id: id, TTL: ttl,
		Protocol: layers.IPProtocolGRE, SrcIP: wanLocal.AsSlice(), DstIP: wanRemote.AsSlice()}
	if df {
		ip.Flags = layers.IPv4DontFragment
	}
	gre := greIPv6()
	if key != nil {
		gre.KeyPresent, gre.Key = true, *key
	}
	return serialize(tb, eth, ip, gre, gopacket.Payload(inner))
}

// TestEncapIPv6: what the kernel routes into the tunnel as IPv6 leaves
// as ip_gre sends it: the traffic class takes the place of the TOS, the
// hop limit that of the TTL.
func TestEncapIPv6(t *testing.T) {
	cases := []struct {
		name          string
		key           *uint32
		ttl           uint8 // tunnel TTL; 0 inherits
		tos           int   // fixed tunnel TOS, -1 inherits
		noPMTUDisc    bool
		tclass, hop   uint8
		wantTTL       uint8
		wantTOS       uint8
		wantDFCleared bool
	}{
		{name: "plain", ttl: 64, tos: -1, hop: 63, wantTTL: 64},
		{name: "keyed", key: u32(testKey), ttl: 64, tos: -1, hop: 63, wantTTL: 64},
		{name: "traffic class inherited", ttl: 64, tos: -1, tclass: 0xb8, hop: 63, wantTTL: 64, wantTOS: 0xb8},
		{name: "ecn ce becomes ect0", ttl: 64, tos: -1, tclass: 0xbb, hop: 63, wantTTL: 64, wantTOS: 0xba},
		{name: "fixed tos keeps inner ecn", ttl: 64, tos: 0x20, tclass: 0xb9, hop: 63, wantTTL: 64, wantTOS: 0x21},
		{name: "hop limit inherited", ttl: 0, tos: -1, hop: 17, wantTTL: 17},
		{name: "pmtudisc off: no DF", ttl: 0, tos: -1, noPMTUDisc: true, hop: 17, wantTTL: 17, wantDFCleared: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			link := tunnelDevs(t, wanNS(t, true))
			tun := testTunnel(c.key, link, tunnel.RPStrict)
			tun.TTL, tun.TOSInherit, tun.TOS, tun.NoPMTUDisc = c.ttl, c.tos < 0, uint8(max(c.tos, 0)), c.noPMTUDisc
			objs := loadOn(t, tun)
			inner := innerPacket6(t, lan1Host6, lan2Host6, c.tclass, c.hop)
			in := frame(t, macTun, macTun, inner)
			for _, dev := range []uint32{link.PeerIfindex, link.Ifindex} {
				before := snapshot(t, &objs.GrebpfMaps)
				verdict, out := run(t, objs.EncapTc, in, skbContext{Ifindex: dev})
				reasons, moved := delta(before, snapshot(t, &objs.GrebpfMaps))
				if verdict != tcRedirect || len(out) < 20 {
					t.Fatalf("on ifindex %d: verdict %d, want TC_ACT_REDIRECT (reasons %v)", dev, verdict, reasons)
				}
				id := uint16(out[18])<<8 | uint16(out[19])
				want := expectedEncap6(t, inner, id, c.wantTTL, c.wantTOS, c.key, !c.wantDFCleared)
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

// packetTooBig is an ICMPv6 "packet too big" with the given MTU from src
// to dst quoting quote, flow label as given, in a frame from mac to mac.
func packetTooBig(tb testing.TB, dstMAC, srcMAC net.HardwareAddr, src, dst net.IP, flow uint32, mtu uint32, quote []byte) []byte {
	tb.Helper()
	eth := &layers.Ethernet{DstMAC: dstMAC, SrcMAC: srcMAC, EthernetType: layers.EthernetTypeIPv6}
	ip := &layers.IPv6{Version: 6, FlowLabel: flow, NextHeader: layers.IPProtocolICMPv6, HopLimit: 64, SrcIP: src, DstIP: dst}
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypePacketTooBig, 0)}
	must(tb, icmp.SetNetworkLayerForChecksum(ip))
	body := binary.BigEndian.AppendUint32(nil, mtu)
	return serialize(tb, eth, ip, icmp, gopacket.Payload(append(body, quote...)))
}

// flowLabel is the flow label of an IPv6 frame.
func flowLabel(frame []byte) uint32 {
	if len(frame) < 18 {
		return 0
	}
	return binary.BigEndian.Uint32(frame[14:]) & 0xfffff
}

// TestEncapPacketTooBig: an inner IPv6 packet over the tunnel's path MTU
// gets the "packet too big" ip_gre's icmpv6_ndo_send would send, with the
// tunnel MTU (path MTU - 24), quoting up to IPv6's minimum MTU, from the
// address of the device the route back leaves through.
func TestEncapPacketTooBig(t *testing.T) {
	cases := []struct {
		name  string
		pmtu  uint32
		size  int
		src   net.IP
		local bool   // the sender is this host
		want  uint32 // the MTU sent; 0: encapsulated and sent
		drop  bool   // counted packet-too-big, but no ICMPv6 may answer
		inner func(tb testing.TB) []byte
	}{
		{name: "over the learned path mtu", pmtu: 1400, size: 1477, src: lan1Host6, want: 1376},
		{name: "one byte over", pmtu: 1400, size: 1377, src: lan1Host6, want: 1376},
		{name: "exactly fits", pmtu: 1400, size: 1376, src: lan1Host6},
		{name: "tunnel mtu exactly 1280", pmtu: 1304, size: 1281, src: lan1Host6, want: 1280},
		{name: "tunnel mtu under 1280: sent", pmtu: 1300, size: 1290, src: lan1Host6},
		{name: "sender on this host", pmtu: 1400, size: 1477, src: overlay6R1.AsSlice(), local: true, want: 1376},
		{name: "no error about an ICMPv6 error", pmtu: 1400, drop: true, inner: func(tb testing.TB) []byte {
			return packetTooBig(tb, macTun, macTun, lan1Host6, lan2Host6, 0, 1000, make([]byte, 1400))[14:]
		}},
		{name: "no error to a multicast source", pmtu: 1400, size: 1477, src: net.ParseIP("ff02::1"), drop: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wan := wanNS(t, true)
			lan := lanSide(t, true)
			link := tunnelDevs(t, wan)
			ipv6Side(t, link)
			tun := testTunnel(nil, link, tunnel.RPStrict)
			objs := loadOn(t, tun)
			m := &objs.GrebpfMaps
			must(t, maps.SetICMPSources(m, ipv6Sources(lanAddrs(t), lan, link)))
			setPathMTU(t, m, tun, c.pmtu, pmtuExpires)
			var inner []byte
			if c.inner != nil {
				inner = c.inner(t)
			} else {
				inner = udpPacket6(t, c.src, lan2Host6, c.size)
			}
			in := frame(t, macTun, macTun, inner)
			before := snapshot(t, m)
			verdict, out := run(t, objs.EncapTc, in, skbContext{Ifindex: link.PeerIfindex})
			reasons, moved := delta(before, snapshot(t, m))
			switch {
			case c.drop:
				if verdict != tcShot || len(reasons) != 1 || reasons["packet-too-big"] != 1 || moved != (tunnel.Counters{}) {
					t.Errorf("verdict %d, counters %v %+v: want a drop counted packet-too-big", verdict, reasons, moved)
				}
			case c.want == 0:
				if verdict != tcRedirect || len(reasons) != 0 || moved != (tunnel.Counters{TxPackets: 1, TxBytes: uint64(len(inner))}) {
					t.Fatalf("verdict %d, counters %v %+v: want encapsulated and sent", verdict, reasons, moved)
				}
				want := expectedEncap6(t, inner, 0, 64, 0, nil, true)
				if d := diff(anyID(out), anyID(want)); d != "" {
					t.Errorf("encapsulated frame:%s", d)
				}
			default:
				if verdict != tcRedirect || len(reasons) != 1 || reasons["packet-too-big"] != 1 || moved != (tunnel.Counters{}) {
					t.Fatalf("verdict %d, counters %v %+v: want the ICMPv6 sent, counted packet-too-big", verdict, reasons, moved)
				}
				from, dstMAC, srcMAC := r1LAN6.AsSlice(), macLANHost, macWAN
				if c.local {
					from, dstMAC, srcMAC = overlay6R1.AsSlice(), macTun, macTun
				}
				want := packetTooBig(t, dstMAC, srcMAC, from, c.src, flowLabel(out), c.want, inner[:min(len(inner), 1280-48)])
				if d := diff(out, want); d != "" {
					t.Errorf("ICMPv6:%s", d)
				}
			}
		})
	}
}

// TestFastpathIPv6: the fast path encapsulates IPv6 from the LAN that the
// FIB routes into a tunnel (hop limit one less), and leaves to the stack
// what it leaves for IPv4.
func TestFastpathIPv6(t *testing.T) {
	cases := []struct {
		name    string
		hop     uint8
		size    int // 0: an echo
		dst     net.IP
		verdict uint32
	}{
		{name: "encapsulated and redirected", hop: 64, dst: lan2Host6, verdict: xdpRedirect},
		{name: "hop limit 1 to the stack", hop: 1, dst: lan2Host6, verdict: xdpPass},
		{name: "over the tunnel mtu to the stack", hop: 64, size: 1477, dst: lan2Host6, verdict: xdpPass},
		{name: "not a tunnel route", hop: 64, dst: net.ParseIP("2001:db8:100::9"), verdict: xdpPass},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wan := wanNS(t, true)
			lan := lanSide(t, true)
			link := tunnelDevs(t, wan)
			ipv6Side(t, link)
			tun := testTunnel(nil, link, tunnel.RPStrict)
			objs := loadOn(t, tun)
			setPathMTU(t, &objs.GrebpfMaps, tun, 1500, pmtuExpires)
			inner := innerPacket6(t, lan1Host6, c.dst, 0, c.hop)
			if c.size > 0 {
				inner = udpPacket6(t, lan1Host6, c.dst, c.size)
			}
			in := frame(t, macWAN, macLANHost, inner)
			before := snapshot(t, &objs.GrebpfMaps)
			verdict, out := run(t, objs.FastpathLan, in, xdpContext{DataEnd: uint32(len(in)), IngressIfindex: uint32(lan)})
			reasons, moved := delta(before, snapshot(t, &objs.GrebpfMaps))
			if verdict != c.verdict {
				t.Fatalf("verdict %d, want %d (reasons %v)", verdict, c.verdict, reasons)
			}
			if verdict == xdpPass {
				if d := diff(out, in); d != "" {
					t.Errorf("passed frame changed:%s", d)
				}
				if len(reasons) != 0 || moved != (tunnel.Counters{}) {
					t.Errorf("counters %v %+v moved for a packet left to the stack", reasons, moved)
				}
				return
			}
			forwarded := withHop(inner, c.hop-1)
			want := expectedEncap6(t, forwarded, 0, 64, 0, nil, true)
			if d := diff(anyID(out), anyID(want)); d != "" {
				t.Errorf("frame:%s", d)
			}
			if len(reasons) != 0 || moved != (tunnel.Counters{TxPackets: 1, TxBytes: uint64(len(inner))}) {
				t.Errorf("counters %v %+v, want tx 1 only", reasons, moved)
			}
		})
	}
}
