package bpf_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/grebpf/grebpf/bpf"
	"github.com/grebpf/grebpf/internal/testutil"
	"github.com/grebpf/grebpf/internal/tunnel"
	"github.com/grebpf/grebpf/maps"
)

func u32(v uint32) *uint32 { return &v }

// decapProgs runs each case through both decap attach points.
// decapProg is a decap program and its verdicts. A decapsulated packet
// leaves XDP as a pass with metadata (to_tunnel_tc redirects it), TC as a
// redirect.
type decapProg struct {
	name                  string
	prog                  *ebpf.Program
	pass, drop, delivered uint32
	meta                  bool
}

func decapProgs(objs *bpf.GrebpfObjects) []decapProg {
	return []decapProg{
		{"xdp", objs.DecapXdp, xdpPass, xdpDrop, xdpPass, true},
		{"tc", objs.DecapTc, tcOK, tcShot, tcRedirect, false},
	}
}

// delivered is the frame p hands on for the tunnel interface ifindex.
func (p decapProg) output(tb testing.TB, ifindex uint32, inner []byte) []byte {
	if p.meta {
		return withMeta(ifindex, toTunnel(tb, inner))
	}
	return toTunnel(tb, inner)
}

type decapCase struct {
	name  string
	key   *uint32 // the tunnel's configured key
	frame func(tb testing.TB, inner []byte) []byte
	// reason is the counter that must move by one; "" means decapsulated.
	reason string
	// xdpOnly: BPF_PROG_TEST_RUN refuses the frame for skb programs.
	xdpOnly bool
	// sourceRoutes: the WAN device accepts source-routed packets.
	sourceRoutes bool
}

// withOptions is a plain GRE frame from the peer whose outer header
// carries opts (a multiple of 4 bytes).
func withOptions(opts ...byte) func(testing.TB, []byte) []byte {
	return func(tb testing.TB, inner []byte) []byte {
		b := greFrame(tb, wanRemote, wanLocal, plainGRE(), inner)
		out := append(append(bytes.Clone(b[:34]), opts...), b[34:]...)
		out[14] = 0x40 | byte((20+len(opts))/4)
		binary.BigEndian.PutUint16(out[16:], uint16(len(out)-14))
		return refreshOuterChecksum(out)
	}
}

func plainGRE() *layers.GRE { return &layers.GRE{Protocol: layers.EthernetTypeIPv4} }
func keyedGRE(k uint32) *layers.GRE {
	return &layers.GRE{Protocol: layers.EthernetTypeIPv4, KeyPresent: true, Key: k}
}

// fromR2 is a well-formed GRE frame from the configured peer.
func fromR2(g *layers.GRE) func(testing.TB, []byte) []byte {
	return func(tb testing.TB, inner []byte) []byte { return greFrame(tb, wanRemote, wanLocal, g, inner) }
}

// mangle edits a well-formed plain GRE frame; outer IPv4 starts at 14, GRE at 34.
func mangle(g *layers.GRE, edit func(b []byte) []byte) func(testing.TB, []byte) []byte {
	return func(tb testing.TB, inner []byte) []byte { return edit(greFrame(tb, wanRemote, wanLocal, g, inner)) }
}

// refreshOuterChecksum recomputes the outer header checksum after an edit,
// so the case fails for the reason it is about.
func refreshOuterChecksum(b []byte) []byte {
	ihl := int(b[14]&0x0f) * 4
	b[24], b[25] = 0, 0
	var sum uint32
	for i := 14; i < 14+ihl; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(b[24:], ^uint16(sum))
	return b
}

var decapCases = []decapCase{
	{name: "plain", frame: fromR2(plainGRE())},
	{name: "keyed", key: u32(testKey), frame: fromR2(keyedGRE(testKey))},
	{name: "outer options", frame: func(tb testing.TB, inner []byte) []byte {
		eth := &layers.Ethernet{DstMAC: macR1, SrcMAC: macWAN, EthernetType: layers.EthernetTypeIPv4}
		ip := &layers.IPv4{Version: 4, TTL: 64, Flags: layers.IPv4DontFragment, Protocol: layers.IPProtocolGRE,
			SrcIP: wanRemote.AsSlice(), DstIP: wanLocal.AsSlice(),
			Options: []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}}
		return serialize(tb, eth, ip, plainGRE(), gopacket.Payload(inner))
	}},

	// Outer options, as the kernel's ip_options_compile judges them.
	{name: "record route with room", frame: withOptions(7, 7, 4, 0, 0, 0, 0, 0)},
	{name: "record route full", frame: withOptions(7, 7, 8, 1, 2, 3, 4, 0)},
	{name: "timestamp with room", frame: withOptions(68, 8, 5, 0, 0, 0, 0, 0)},
	{name: "router alert", frame: withOptions(148, 4, 0, 0)},
	{name: "option length 1", reason: "outer-options", frame: withOptions(148, 1, 0, 0)},
	{name: "option past the header", reason: "outer-options", frame: withOptions(1, 148, 4, 0)},
	{name: "option length byte past the header", reason: "outer-options", frame: withOptions(1, 1, 1, 148)},
	{name: "record route pointer 3", reason: "outer-options", frame: withOptions(7, 7, 3, 0, 0, 0, 0, 0)},
	{name: "record route without room for an entry", reason: "outer-options", frame: withOptions(7, 6, 4, 0, 0, 0, 0, 0)},
	{name: "timestamp pointer 4", reason: "outer-options", frame: withOptions(68, 8, 4, 0, 0, 0, 0, 0)},
	{name: "source route refused", reason: "source-route", frame: withOptions(131, 7, 8, 10, 0, 0, 9, 0)},
	{name: "strict source route refused", reason: "source-route", frame: withOptions(137, 7, 8, 10, 0, 0, 9, 0)},
	{name: "source route done, accepted", sourceRoutes: true, frame: withOptions(131, 7, 8, 10, 0, 0, 9, 0)},
	{name: "source route with hops left, accepted", sourceRoutes: true, reason: "source-routed", frame: withOptions(131, 7, 4, 10, 0, 0, 9, 0)},
	{name: "two source routes", sourceRoutes: true, reason: "outer-options", frame: withOptions(131, 7, 8, 10, 0, 0, 9, 131, 3, 4, 0, 0)},

	{name: "arp", reason: "not-gre", frame: func(tb testing.TB, _ []byte) []byte {
		eth := &layers.Ethernet{DstMAC: layers.EthernetBroadcast, SrcMAC: macWAN, EthernetType: layers.EthernetTypeARP}
		arp := &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: layers.ARPRequest, SourceHwAddress: macWAN, SourceProtAddress: wanRemote.AsSlice(),
			DstHwAddress: make([]byte, 6), DstProtAddress: wanLocal.AsSlice()}
		return serialize(tb, eth, arp)
	}},
	{name: "udp", reason: "not-gre", frame: func(tb testing.TB, _ []byte) []byte {
		eth := &layers.Ethernet{DstMAC: macR1, SrcMAC: macWAN, EthernetType: layers.EthernetTypeIPv4}
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: wanRemote.AsSlice(), DstIP: wanLocal.AsSlice()}
		udp := &layers.UDP{SrcPort: 4000, DstPort: 53}
		udp.SetNetworkLayerForChecksum(ip)
		return serialize(tb, eth, ip, udp, gopacket.Payload("dns?"))
	}},
	{name: "truncated outer header", reason: "truncated", xdpOnly: true, frame: mangle(plainGRE(), func(b []byte) []byte { return b[:14+16] })},
	{name: "truncated gre header", reason: "truncated", frame: mangle(plainGRE(), func(b []byte) []byte {
		binary.BigEndian.PutUint16(b[16:], 22) // outer IPv4 claims 2 bytes of GRE
		return refreshOuterChecksum(b)
	})},
	{name: "truncated key", key: u32(testKey), reason: "truncated", frame: mangle(keyedGRE(testKey), func(b []byte) []byte {
		b = b[:14+20+6]
		binary.BigEndian.PutUint16(b[16:], 26)
		return refreshOuterChecksum(b)
	})},
	{name: "truncated inner", reason: "truncated", frame: mangle(plainGRE(), func(b []byte) []byte {
		binary.BigEndian.PutUint16(b[38+2:], 1400) // inner claims more than is there
		return b
	})},
	// Every length field at its edge. The outer total length bounds
	// everything after it, whatever the frame holds beyond it.
	{name: "key past the outer length", key: u32(testKey), reason: "truncated", frame: mangle(keyedGRE(testKey), func(b []byte) []byte {
		binary.BigEndian.PutUint16(b[16:], 20+6) // the frame still holds key and inner
		return refreshOuterChecksum(b)
	})},
	{name: "inner header past the outer length", reason: "truncated", frame: mangle(plainGRE(), func(b []byte) []byte {
		binary.BigEndian.PutUint16(b[16:], 20+4+19)
		return refreshOuterChecksum(b)
	})},
	{name: "inner one byte past the outer length", reason: "truncated", frame: mangle(plainGRE(), func(b []byte) []byte {
		binary.BigEndian.PutUint16(b[16:], uint16(len(b)-14-1))
		return refreshOuterChecksum(b)
	})},
	{name: "inner header length 4", reason: "truncated", frame: mangle(plainGRE(), func(b []byte) []byte {
		b[38] = 0x44
		return b
	})},
	{name: "inner total length below its header", reason: "truncated", frame: mangle(plainGRE(), func(b []byte) []byte {
		binary.BigEndian.PutUint16(b[38+2:], 19)
		return b
	})},
	{name: "outer header length past the outer length", reason: "truncated", frame: mangle(plainGRE(), func(b []byte) []byte {
		b[14] = 0x4f                             // 60 bytes of header
		binary.BigEndian.PutUint16(b[16:], 60+3) // and 3 of GRE
		return refreshOuterChecksum(b)
	})},
	{name: "outer length beyond frame", reason: "truncated", frame: mangle(plainGRE(), func(b []byte) []byte {
		binary.BigEndian.PutUint16(b[16:], uint16(len(b)-14+1))
		return refreshOuterChecksum(b)
	})},
	{name: "bad outer checksum", reason: "outer-checksum", frame: mangle(plainGRE(), func(b []byte) []byte {
		b[24] ^= 0xff
		return b
	})},
	{name: "outer fragment", reason: "outer-fragment", frame: mangle(plainGRE(), func(b []byte) []byte {
		b[20] = 0x20 // MF, DF cleared
		return refreshOuterChecksum(b)
	})},
	{name: "outer non-first fragment", reason: "outer-fragment", frame: mangle(plainGRE(), func(b []byte) []byte {
		b[20], b[21] = 0x00, 0xb9
		return refreshOuterChecksum(b)
	})},
	{name: "unknown peer", reason: "unknown-peer", frame: func(tb testing.TB, inner []byte) []byte {
		return greFrame(tb, netip.MustParseAddr("10.200.0.99"), wanLocal, plainGRE(), inner)
	}},
	{name: "not our address", reason: "unknown-peer", frame: func(tb testing.TB, inner []byte) []byte {
		return greFrame(tb, wanRemote, netip.MustParseAddr("10.100.0.2"), plainGRE(), inner)
	}},
	{name: "gre version 1", reason: "bad-version", frame: mangle(plainGRE(), func(b []byte) []byte {
		b[35] |= 0x01
		return b
	})},
	{name: "routing bit", reason: "routing", frame: mangle(plainGRE(), func(b []byte) []byte {
		b[34] |= 0x40
		return b
	})},
	{name: "checksum flag", reason: "csum-flag", frame: fromR2(&layers.GRE{Protocol: layers.EthernetTypeIPv4, ChecksumPresent: true})},
	// Sequence numbers are ignored, as ip_gre does without iseq.
	{name: "sequence number", frame: fromR2(&layers.GRE{Protocol: layers.EthernetTypeIPv4, SeqPresent: true, Seq: 1})},
	{name: "keyed with sequence number", key: u32(testKey), frame: fromR2(&layers.GRE{Protocol: layers.EthernetTypeIPv4, KeyPresent: true, Key: testKey, SeqPresent: true, Seq: 0xfffffffe})},
	{name: "sequence number past the outer length", reason: "truncated", frame: mangle(&layers.GRE{Protocol: layers.EthernetTypeIPv4, SeqPresent: true, Seq: 1}, func(b []byte) []byte {
		binary.BigEndian.PutUint16(b[16:], 20+4+3)
		return refreshOuterChecksum(b)
	})},
	{name: "wrong key", key: u32(testKey), reason: "key-mismatch", frame: fromR2(keyedGRE(testKey + 1))},
	{name: "missing key", key: u32(testKey), reason: "key-mismatch", frame: fromR2(plainGRE())},
	{name: "unexpected key", reason: "key-mismatch", frame: fromR2(keyedGRE(testKey))},
	{name: "inner ipv6", reason: "unknown-inner", frame: fromR2(&layers.GRE{Protocol: layers.EthernetTypeIPv6})},
	{name: "inner ethernet", reason: "unknown-inner", frame: fromR2(&layers.GRE{Protocol: layers.EthernetTypeTransparentEthernetBridging})},
	{name: "inner not ipv4", reason: "unknown-inner", frame: mangle(plainGRE(), func(b []byte) []byte {
		b[38] = 0x65
		return b
	})},
}

func TestDecap(t *testing.T) {
	inner := innerPacket(t, lan2Host, lan1Host, 0, 63)
	for _, c := range decapCases {
		t.Run(c.name, func(t *testing.T) {
			objs := load(t, c.key)
			if c.sourceRoutes {
				must(t, maps.WriteAttachment(&objs.GrebpfMaps, maps.Attachment{Flags: maps.AttachAcceptSourceRoute}))
			}
			for _, p := range decapProgs(objs) {
				if c.xdpOnly && p.name != "xdp" {
					continue
				}
				p.expect(t, objs, c.frame(t, inner), inner, c.reason)
			}
		})
	}
}

// expect runs p over in and checks the one outcome: inner delivered to
// the test tunnel's interface (reason ""), rx counted and nothing else;
// or the frame dropped or passed unchanged as reason says, reason alone
// counted.
func (p decapProg) expect(t *testing.T, objs *bpf.GrebpfObjects, in, inner []byte, reason string) {
	t.Helper()
	before := snapshot(t, &objs.GrebpfMaps)
	verdict, out := run(t, p.prog, in, nil)
	reasons, moved := delta(before, snapshot(t, &objs.GrebpfMaps))
	if reason == "" {
		if verdict != p.delivered {
			t.Errorf("%s: verdict %d, want %d (reasons %v)", p.name, verdict, p.delivered, reasons)
		}
		if d := diff(out, p.output(t, fakeLink.Ifindex, inner)); d != "" {
			t.Errorf("%s: decapsulated frame:%s", p.name, d)
		}
		if len(reasons) != 0 || moved != (tunnel.Counters{RxPackets: 1, RxBytes: uint64(len(inner))}) {
			t.Errorf("%s: counters moved %v %+v, want rx 1 packet %d bytes only", p.name, reasons, moved, len(inner))
		}
		return
	}
	want := p.drop
	if !maps.ReasonDrops(reasonByName(t, reason)) {
		want = p.pass
	}
	if verdict != want {
		t.Errorf("%s: verdict %d, want %d", p.name, verdict, want)
	}
	if d := diff(out, in); d != "" && verdict == p.pass {
		t.Errorf("%s: passed frame was changed:%s", p.name, d)
	}
	if len(reasons) != 1 || reasons[reason] != 1 || moved != (tunnel.Counters{}) {
		t.Errorf("%s: counters moved %v %+v, want only %s +1", p.name, reasons, moved, reason)
	}
}

func reasonByName(tb testing.TB, name string) maps.Reason {
	tb.Helper()
	for r := maps.Reason(0); r < bpf.GrebpfReasonREASON_MAX; r++ {
		if maps.ReasonName(r) == name {
			return r
		}
	}
	tb.Fatalf("no reason %q", name)
	return 0
}

// TestDecapInnerSource checks decap's rp_filter against a real FIB: gre1
// routes 172.16.200.0/24 and 2001:db8:200::/64 (and the peer's overlay
// addresses), lan0 has 172.16.100.0/24 and 2001:db8:100::/64, the IPv4
// default route leaves through the WAN, and IPv6 has none.
func TestDecapInnerSource(t *testing.T) {
	cases := []struct {
		name string
		rp   tunnel.RPFilter
		src  net.IP
		ok   bool
	}{
		{"strict, routed back through the tunnel", tunnel.RPStrict, lan2Host, true},
		{"strict, the peer's overlay address", tunnel.RPStrict, overlayR2.AsSlice(), true},
		{"strict, routed back through the WAN", tunnel.RPStrict, net.IPv4(8, 8, 8, 8), false},
		{"strict, a local address", tunnel.RPStrict, net.IPv4(10, 100, 0, 1), false},
		{"loose, routed back through the WAN", tunnel.RPLoose, net.IPv4(8, 8, 8, 8), true},
		{"loose, a local address", tunnel.RPLoose, net.IPv4(10, 100, 0, 1), false},
		{"off", tunnel.RPOff, net.IPv4(10, 100, 0, 1), true},
		{"ipv6, strict, routed back through the tunnel", tunnel.RPStrict, lan2Host6, true},
		{"ipv6, strict, link-local: the tunnel link's own", tunnel.RPStrict, net.ParseIP("fe80::2"), true},
		{"ipv6, strict, the peer's overlay address", tunnel.RPStrict, overlay6R2.AsSlice(), true},
		{"ipv6, strict, routed back through the LAN", tunnel.RPStrict, net.ParseIP("2001:db8:100::9"), false},
		{"ipv6, strict, no route back", tunnel.RPStrict, net.ParseIP("2001:db8:999::1"), false},
		{"ipv6, loose, routed back through the LAN", tunnel.RPLoose, net.ParseIP("2001:db8:100::9"), true},
		{"ipv6, loose, no route back", tunnel.RPLoose, net.ParseIP("2001:db8:999::1"), false},
		{"ipv6, off, no route back", tunnel.RPOff, net.ParseIP("2001:db8:999::1"), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wan := wanNS(t, true)
			lanSide(t, true)
			link := tunnelDevs(t, wan)
			ipv6Side(t, link)
			var inner []byte
			gre := plainGRE()
			if c.src.To4() == nil {
				inner, gre = innerPacket6(t, c.src, lan1Host6, 0, 63), greIPv6()
			} else {
				inner = innerPacket(t, c.src, lan1Host, 0, 63)
			}
			objs := loadOn(t, testTunnel(nil, link, c.rp))
			for _, p := range append(decapProgs(objs), decapProg{"fastpath", objs.FastpathWan, xdpPass, xdpDrop, xdpRedirect, false}) {
				in := greFrame(t, wanRemote, wanLocal, gre, inner)
				before := snapshot(t, &objs.GrebpfMaps)
				verdict, out := run(t, p.prog, in, nil)
				reasons, moved := delta(before, snapshot(t, &objs.GrebpfMaps))
				if c.ok && p.name == "fastpath" && !c.src.IsLinkLocalUnicast() {
					// Forwarded as the FIB says (the stack forwards
					// nothing from a link-local source).
					if verdict != p.delivered || len(reasons) != 0 || moved.RxPackets != 1 {
						t.Errorf("%s: verdict %d, counters %v %+v; want forwarded", p.name, verdict, reasons, moved)
					}
					continue
				}
				if c.ok {
					want, delivered := p.output(t, link.Ifindex, inner), p.delivered
					if p.name == "fastpath" {
						want, delivered = withMeta(link.Ifindex, toTunnel(t, inner)), xdpPass
					}
					if verdict != delivered || diff(out, want) != "" || len(reasons) != 0 || moved.RxPackets != 1 {
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

// TestDecapECN runs every outer × inner ECN combination through each
// decap path, IPv4 and IPv6 inside. RFC 6040 as ip_gre applies it: outer
// CE marks an ECN-capable inner packet CE and drops a Not-ECT one
// (counted); outer ECT(1) turns inner ECT(0) into ECT(1); the rest is
// left alone. The expected inner header is built anew (IPv4's checksum
// computed from scratch); the fast path forwards it a hop further.
func TestDecapECN(t *testing.T) {
	const notECT, ect1, ect0, ce = 0, 1, 2, 3
	wan := wanNS(t, true)
	lanSide(t, true)
	link := tunnelDevs(t, wan)
	ipv6Side(t, link)
	objs := loadOn(t, testTunnel(nil, link, tunnel.RPStrict))
	progs := append(decapProgs(objs), decapProg{"fastpath", objs.FastpathWan, xdpPass, xdpDrop, xdpRedirect, false})
	for _, fam := range []struct {
		name      string
		gre       *layers.GRE
		inner     func(tos uint8) []byte
		forwarded func(pkt []byte) []byte
	}{
		{"IPv4", plainGRE(), func(tos uint8) []byte { return innerPacket(t, lan2Host, lan1Host, tos, 63) },
			func(pkt []byte) []byte { return withTTL(t, pkt, 62) }},
		{"IPv6", greIPv6(), func(tos uint8) []byte { return innerPacket6(t, lan2Host6, lan1Host6, tos, 63) },
			func(pkt []byte) []byte { return withHop(pkt, 62) }},
	} {
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
				// No subtests: they would run on other threads, outside
				// the namespace whose FIB the programs look up.
				name := fmt.Sprintf("%s, outer ECN %d, inner ECN %d", fam.name, outer, innerECN)
				in := greFrame(t, wanRemote, wanLocal, fam.gre, fam.inner(0xb8|innerECN))
				in[15] = 0x20 | outer // the outer DSCP never reaches the inner header
				refreshOuterChecksum(in)
				delivered := fam.inner(0xb8 | want)
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
						wantFrame = frame(t, macLANHost, macWAN, fam.forwarded(delivered))
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
}

// TestDecapByKey: tunnels between the same endpoints are told apart by
// the key a packet carries (each tunnel's input key); a key none of them
// takes is a key mismatch, and the path's other packets still decap.
func TestDecapByKey(t *testing.T) {
	testutil.NeedRoot(t)
	var objs bpf.GrebpfObjects
	must(t, bpf.LoadGrebpfObjects(&objs, nil))
	t.Cleanup(func() { objs.Close() })
	m := &objs.GrebpfMaps
	byKey := map[string]uint32{}
	var all []tunnel.Tunnel
	for i, k := range []*uint32{nil, u32(1), u32(2)} {
		idx := uint32(1000 + 10*i)
		tun := testTunnel(k, tunnel.Link{Ifindex: idx, PeerIfindex: idx + 1, MAC: [6]byte(macTun), PeerMAC: [6]byte(macTunPeer)}, tunnel.RPOff)
		tun.Name = fmt.Sprint("gre", i)
		tun.OKey = u32(9) // what a tunnel sends plays no part in what it takes
		putTunnel(t, m, tun)
		all = append(all, tun)
		byKey[fmt.Sprintf("%v %s", k != nil, keyName(k))] = idx
	}
	must(t, maps.SetPaths(m, all))
	inner := innerPacket(t, lan2Host, lan1Host, 0, 63)
	for _, c := range []struct {
		name string
		gre  *layers.GRE
		want uint32 // 0: key mismatch
	}{
		{"no key", plainGRE(), byKey["false none"]},
		{"key 1", keyedGRE(1), byKey["true 1"]},
		{"key 2", keyedGRE(2), byKey["true 2"]},
		{"key 3", keyedGRE(3), 0},
		{"key 9 (sent, not taken)", keyedGRE(9), 0},
	} {
		for _, p := range decapProgs(&objs) {
			in := greFrame(t, wanRemote, wanLocal, c.gre, inner)
			before := map[uint32]tunnel.Counters{}
			for _, idx := range byKey {
				before[idx], _ = maps.TunnelCounters(m, idx)
			}
			r0, _ := maps.ReasonCounts(m)
			verdict, out := run(t, p.prog, in, nil)
			r1, _ := maps.ReasonCounts(m)
			if c.want == 0 {
				if verdict != p.drop || r1[bpf.GrebpfReasonREASON_KEY_MISMATCH] != r0[bpf.GrebpfReasonREASON_KEY_MISMATCH]+1 {
					t.Errorf("%s, %s: verdict %d, want a drop counted key-mismatch", c.name, p.name, verdict)
				}
				continue
			}
			if verdict != p.delivered {
				t.Errorf("%s, %s: verdict %d, want delivered", c.name, p.name, verdict)
			}
			if d := diff(out, p.output(t, c.want, inner)); d != "" {
				t.Errorf("%s, %s: frame:%s", c.name, p.name, d)
			}
			for _, idx := range byKey {
				after, _ := maps.TunnelCounters(m, idx)
				if got, want := after.RxPackets-before[idx].RxPackets, map[bool]uint64{true: 1}[idx == c.want]; got != want {
					t.Errorf("%s, %s: tunnel %d received %d packets, want %d", c.name, p.name, idx, got, want)
				}
			}
		}
	}
}

func keyName(k *uint32) string {
	if k == nil {
		return "none"
	}
	return fmt.Sprint(*k)
}

// TestDecapISeq: a tunnel with iseq takes sequence numbers that do not go
// back (serial number arithmetic, as ip_gre), and drops packets without
// one or behind; without iseq, numbers are ignored (decapCases).
func TestDecapISeq(t *testing.T) {
	objs := loadOn(t, func() tunnel.Tunnel {
		tun := testTunnel(nil, fakeLink, tunnel.RPOff)
		tun.ISeq = true
		return tun
	}())
	inner := innerPacket(t, lan2Host, lan1Host, 0, 63)
	seq := func(n uint32) *layers.GRE {
		return &layers.GRE{Protocol: layers.EthernetTypeIPv4, SeqPresent: true, Seq: n}
	}
	for _, c := range []struct {
		name string
		gre  *layers.GRE
		ok   bool
	}{
		{"first, any number", seq(0xfffffff0), true},
		{"next", seq(0xfffffff1), true},
		{"a gap forward, across the wrap", seq(5), true},
		{"behind", seq(3), false},
		{"the same again", seq(5), false},
		{"no number", plainGRE(), false},
		{"next after the drops", seq(6), true},
	} {
		for _, p := range decapProgs(objs)[:1] { // one program: the state is shared
			before := snapshot(t, &objs.GrebpfMaps)
			verdict, _ := run(t, p.prog, greFrame(t, wanRemote, wanLocal, c.gre, inner), nil)
			reasons, moved := delta(before, snapshot(t, &objs.GrebpfMaps))
			if c.ok && (verdict != p.delivered || moved.RxPackets != 1) {
				t.Errorf("%s: verdict %d, counters %v %+v: want delivered", c.name, verdict, reasons, moved)
			}
			if !c.ok && (verdict != p.drop || reasons["seq-order"] != 1) {
				t.Errorf("%s: verdict %d, counters %v %+v: want dropped as seq-order", c.name, verdict, reasons, moved)
			}
		}
	}
}

// TestDecapICsum: a tunnel with icsum takes only packets with a right GRE
// checksum (the key after it); without icsum, a checksum is refused
// (decapCases), as ip_gre does.
func TestDecapICsum(t *testing.T) {
	for _, key := range []*uint32{nil, u32(testKey)} {
		tun := testTunnel(key, fakeLink, tunnel.RPOff)
		tun.ICsum = true
		objs := loadOn(t, tun)
		inner := innerPacket(t, lan2Host, lan1Host, 0, 63)
		gre := func() *layers.GRE {
			g := &layers.GRE{Protocol: layers.EthernetTypeIPv4, ChecksumPresent: true}
			if key != nil {
				g.KeyPresent, g.Key = true, *key
			}
			return g
		}
		for _, c := range []struct {
			name   string
			frame  func() []byte
			reason string
		}{
			{"right checksum", func() []byte { return greFrame(t, wanRemote, wanLocal, gre(), inner) }, ""},
			{"wrong checksum", func() []byte {
				b := greFrame(t, wanRemote, wanLocal, gre(), inner)
				b[len(b)-1] ^= 0x55 // the payload, under the checksum
				return b
			}, "gre-checksum"},
			{"no checksum", func() []byte {
				g := gre()
				g.ChecksumPresent = false
				return greFrame(t, wanRemote, wanLocal, g, inner)
			}, "csum-flag"},
		} {
			for _, p := range decapProgs(objs) {
				in := c.frame()
				before := snapshot(t, &objs.GrebpfMaps)
				verdict, out := run(t, p.prog, in, nil)
				reasons, moved := delta(before, snapshot(t, &objs.GrebpfMaps))
				name := fmt.Sprintf("keyed %v, %s, %s", key != nil, c.name, p.name)
				if c.reason == "" {
					if verdict != p.delivered || moved.RxPackets != 1 || len(reasons) != 0 {
						t.Errorf("%s: verdict %d, counters %v %+v: want delivered", name, verdict, reasons, moved)
					}
					if d := diff(out, p.output(t, fakeLink.Ifindex, inner)); d != "" {
						t.Errorf("%s: frame:%s", name, d)
					}
					continue
				}
				if verdict != p.drop || len(reasons) != 1 || reasons[c.reason] != 1 {
					t.Errorf("%s: verdict %d, counters %v: want dropped as %s", name, verdict, reasons, c.reason)
				}
			}
		}
	}
}
