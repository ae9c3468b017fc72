package bpf_test

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/grebpf/grebpf/bpf"
	"github.com/grebpf/grebpf/internal/tunnel"
	"github.com/grebpf/grebpf/maps"
)

// The programs' defaults, which the loader replaces with the namespace's
// sysctls (the tests load the programs as built).
const (
	pmtuFloor   = 552
	pmtuExpires = 600 * time.Second
)

var wanGateway = net.IPv4(10, 100, 0, 254).To4()

func monotonic(tb testing.TB) time.Duration {
	var ts unix.Timespec
	must(tb, unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts))
	return time.Duration(ts.Nano())
}

// setPathMTU writes what an earlier ICMP would have taught, holding for left.
func setPathMTU(tb testing.TB, m *maps.Maps, t tunnel.Tunnel, mtu uint32, left time.Duration) {
	tb.Helper()
	k := bpf.GrebpfPeerKey{Local: binary.NativeEndian.Uint32(t.Local.AsSlice()), Remote: binary.NativeEndian.Uint32(t.Remote.AsSlice())}
	must(tb, m.PathMtus.Put(k, bpf.GrebpfPathMtu{Mtu: mtu, Expires: uint64(monotonic(tb) + left)}))
}

// udpPacket is an IPv4 UDP packet of size bytes lan side to lan side.
func udpPacket(tb testing.TB, src, dst net.IP, tos uint8, size int, df bool) []byte {
	tb.Helper()
	ip := &layers.IPv4{Version: 4, IHL: 5, TOS: tos, TTL: 63, Id: 0x3344, Protocol: layers.IPProtocolUDP, SrcIP: src, DstIP: dst}
	if df {
		ip.Flags = layers.IPv4DontFragment
	}
	udp := &layers.UDP{SrcPort: 4000, DstPort: 5000}
	udp.SetNetworkLayerForChecksum(ip)
	payload := make([]byte, size-20-8)
	for i := range payload {
		payload[i] = byte(i)
	}
	return serialize(tb, ip, udp, gopacket.Payload(payload))
}

// fragNeeded is an ICMP "fragmentation needed" with the given MTU from
// src to dst, quoting quote, as a frame from mac to mac.
func fragNeeded(tb testing.TB, dstMAC, srcMAC net.HardwareAddr, src, dst net.IP, tos uint8, mtu uint16, quote []byte) []byte {
	tb.Helper()
	eth := &layers.Ethernet{DstMAC: dstMAC, SrcMAC: srcMAC, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, IHL: 5, TOS: tos, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: src, DstIP: dst}
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeFragmentationNeeded), Seq: mtu}
	return serialize(tb, eth, ip, icmp, gopacket.Payload(quote))
}

// fromWANRouter is the WAN router's "fragmentation needed" to r1 about
// an outer packet r1 sent, quoting quoteLen bytes of it.
func fromWANRouter(tb testing.TB, mtu uint16, outer []byte, quoteLen int) []byte {
	return fragNeeded(tb, macR1, macWAN, wanGateway, wanLocal.AsSlice(), 0xc0, mtu, outer[:min(quoteLen, len(outer))])
}

// outerOf is r1's outer packet (IPv4 header on) carrying inner with g.
func outerOf(tb testing.TB, g *layers.GRE, inner []byte) []byte {
	tb.Helper()
	ip := &layers.IPv4{Version: 4, IHL: 5, Id: 0x5151, Flags: layers.IPv4DontFragment, TTL: 64,
		Protocol: layers.IPProtocolGRE, SrcIP: wanLocal.AsSlice(), DstIP: wanRemote.AsSlice()}
	return serialize(tb, ip, g, gopacket.Payload(inner))
}

func TestPathMTULearned(t *testing.T) {
	inner := udpPacket(t, lan1Host, lan2Host, 0, 1476, true)
	plain := func(tb testing.TB) []byte { return outerOf(tb, plainGRE(), inner) }
	cases := []struct {
		name  string
		key   *uint32
		okey  *uint32 // the key sent, when not key
		had   uint32  // a path MTU already learned
		frame func(tb testing.TB) []byte
		want  uint32 // the path MTU after; 0: the message is not ours
	}{
		{name: "quoting as Linux routers do", frame: func(tb testing.TB) []byte { return fromWANRouter(tb, 1400, plain(tb), 548) }, want: 1400},
		{name: "quoting 8 bytes past the header", frame: func(tb testing.TB) []byte { return fromWANRouter(tb, 1400, plain(tb), 28) }, want: 1400},
		{name: "below the floor", frame: func(tb testing.TB) []byte { return fromWANRouter(tb, 300, plain(tb), 548) }, want: pmtuFloor},
		{name: "no mtu from an old router", frame: func(tb testing.TB) []byte { return fromWANRouter(tb, 0, plain(tb), 548) }, want: pmtuFloor},
		{name: "never raised", had: 1300, frame: func(tb testing.TB) []byte { return fromWANRouter(tb, 1400, plain(tb), 548) }, want: 1300},
		{name: "lowered again", had: 1400, frame: func(tb testing.TB) []byte { return fromWANRouter(tb, 1280, plain(tb), 548) }, want: 1280},
		{name: "keyed", key: u32(testKey), want: 1400, frame: func(tb testing.TB) []byte {
			return fromWANRouter(tb, 1400, outerOf(tb, keyedGRE(testKey), inner), 548)
		}},
		{name: "keyed with checksum", key: u32(testKey), want: 1400, frame: func(tb testing.TB) []byte {
			g := &layers.GRE{Protocol: layers.EthernetTypeIPv4, ChecksumPresent: true, KeyPresent: true, Key: testKey}
			return fromWANRouter(tb, 1400, outerOf(tb, g, inner), 548)
		}},
		{name: "output key", key: u32(testKey), okey: u32(77), want: 1400, frame: func(tb testing.TB) []byte {
			return fromWANRouter(tb, 1400, outerOf(tb, keyedGRE(77), inner), 548)
		}},
		{name: "input key quoted", key: u32(testKey), okey: u32(77), frame: func(tb testing.TB) []byte {
			return fromWANRouter(tb, 1400, outerOf(tb, keyedGRE(testKey), inner), 548)
		}},
		{name: "wrong key", key: u32(testKey), frame: func(tb testing.TB) []byte {
			return fromWANRouter(tb, 1400, outerOf(tb, keyedGRE(testKey+1), inner), 548)
		}},
		{name: "no key for a keyed tunnel", key: u32(testKey), frame: func(tb testing.TB) []byte { return fromWANRouter(tb, 1400, plain(tb), 548) }},
		{name: "key past the quote", key: u32(testKey), frame: func(tb testing.TB) []byte {
			return fromWANRouter(tb, 1400, outerOf(tb, keyedGRE(testKey), inner), 24)
		}},
		{name: "bad icmp checksum", frame: func(tb testing.TB) []byte {
			b := fromWANRouter(tb, 1400, plain(tb), 548)
			b[14+20+2] ^= 0xff
			return b
		}},
		{name: "quoted packet not gre", frame: func(tb testing.TB) []byte {
			b := plain(tb)
			b[9] = 17
			return fromWANRouter(tb, 1400, b, 548)
		}},
		{name: "quoted gre not from us", frame: func(tb testing.TB) []byte {
			b := plain(tb)
			copy(b[12:16], net.IPv4(10, 100, 0, 9).To4())
			return fromWANRouter(tb, 1400, b, 548)
		}},
		{name: "quoted gre to no peer of ours", frame: func(tb testing.TB) []byte {
			b := plain(tb)
			copy(b[16:20], net.IPv4(10, 200, 0, 99).To4())
			return fromWANRouter(tb, 1400, b, 548)
		}},
		{name: "quoted gre version 1", frame: func(tb testing.TB) []byte {
			b := plain(tb)
			b[21] |= 1
			return fromWANRouter(tb, 1400, b, 548)
		}},
		{name: "quote shorter than a gre header", frame: func(tb testing.TB) []byte { return fromWANRouter(tb, 1400, plain(tb), 22) }},
		{name: "host unreachable", frame: func(tb testing.TB) []byte {
			b := fromWANRouter(tb, 1400, plain(tb), 548)
			b[14+20+1] = 1
			binary.BigEndian.PutUint16(b[14+20+2:], 0)
			binary.BigEndian.PutUint16(b[14+20+2:], ^onesSum(b[14+20:]))
			return b
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tun := testTunnel(c.key, fakeLink, tunnel.RPOff)
			if c.okey != nil {
				tun.OKey = c.okey
			}
			objs := loadOn(t, tun)
			for _, p := range append(decapProgs(objs), decapProg{"fastpath", objs.FastpathWan, xdpPass, xdpDrop, xdpPass, true}) {
				k := bpf.GrebpfPeerKey{Local: binary.NativeEndian.Uint32(wanLocal.AsSlice()), Remote: binary.NativeEndian.Uint32(wanRemote.AsSlice())}
				objs.GrebpfMaps.PathMtus.Delete(k)
				if c.had != 0 {
					setPathMTU(t, &objs.GrebpfMaps, tun, c.had, pmtuExpires)
				}
				in := c.frame(t)
				before := snapshot(t, &objs.GrebpfMaps)
				verdict, out := run(t, p.prog, in, nil)
				reasons, moved := delta(before, snapshot(t, &objs.GrebpfMaps))
				if verdict != p.pass {
					t.Errorf("%s: verdict %d, want pass", p.name, verdict)
				}
				if d := diff(out, in); d != "" {
					t.Errorf("%s: passed frame was changed:%s", p.name, d)
				}
				reason := "path-mtu"
				if c.want == 0 {
					reason = "not-gre"
				}
				if len(reasons) != 1 || reasons[reason] != 1 || moved != (tunnel.Counters{}) {
					t.Errorf("%s: counters moved %v %+v, want only %s +1", p.name, reasons, moved, reason)
				}
				mtu, left, ok := maps.PathMTU(&objs.GrebpfMaps, tun, monotonic(t))
				want := c.want
				if want == 0 {
					want = c.had // not ours: nothing changes
				}
				if mtu != want || ok != (want != 0) {
					t.Errorf("%s: path mtu %d (held %v), want %d", p.name, mtu, ok, want)
				}
				if ok && (left > pmtuExpires || left < pmtuExpires-time.Minute) {
					t.Errorf("%s: path mtu holds %v more, want about %v", p.name, left, pmtuExpires)
				}
			}
		})
	}
}

// onesSum is the ones' complement sum of b, for fixing a checksum after an edit.
func onesSum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// anyID zeroes a frame's IPv4 id, random in what the kernel and the
// programs send, and fixes the header checksum to match.
func anyID(b []byte) []byte {
	if len(b) < 34 {
		return b
	}
	b = append([]byte(nil), b...)
	b[18], b[19], b[24], b[25] = 0, 0, 0, 0
	binary.BigEndian.PutUint16(b[24:], ^onesSum(b[14:34]))
	return b
}

// TestEncapFragNeeded: a DF packet over the tunnel's path MTU (learned,
// or the WAN route's) is answered with exactly the "fragmentation needed"
// ip_gre's icmp_send would send its sender.
func TestEncapFragNeeded(t *testing.T) {
	overlay := overlayR1.AsSlice()
	cases := []struct {
		name    string
		key     *uint32
		pmtu    uint32 // learned; 0 none
		expired bool   // the learned path MTU no longer holds
		wanMTU  int    // 0 leaves 1500
		inner   func(tb testing.TB) []byte
		// want is the ICMP's MTU; 0: the packet is encapsulated and sent.
		want uint16
		// local: the sender is this host (gre1's address).
		local bool
		drop  bool // counted frag-needed, but no ICMP may answer it
	}{
		{name: "over the learned path mtu", pmtu: 1400, want: 1376, inner: func(tb testing.TB) []byte { return udpPacket(tb, lan1Host, lan2Host, 0, 1476, true) }},
		{name: "keyed", key: u32(testKey), pmtu: 1400, want: 1372, inner: func(tb testing.TB) []byte { return udpPacket(tb, lan1Host, lan2Host, 0, 1472, true) }},
		{name: "over a lowered wan mtu", wanMTU: 1400, want: 1376, inner: func(tb testing.TB) []byte { return udpPacket(tb, lan1Host, lan2Host, 0, 1476, true) }},
		{name: "one byte over", pmtu: 1400, want: 1376, inner: func(tb testing.TB) []byte { return udpPacket(tb, lan1Host, lan2Host, 0, 1377, true) }},
		{name: "exactly fits", pmtu: 1400, inner: func(tb testing.TB) []byte { return udpPacket(tb, lan1Host, lan2Host, 0, 1376, true) }},
		{name: "short packet quoted whole", pmtu: pmtuFloor, want: pmtuFloor - 24, inner: func(tb testing.TB) []byte { return udpPacket(tb, lan1Host, lan2Host, 0, 540, true) }},
		{name: "dscp kept, ecn not", pmtu: 1400, want: 1376, inner: func(tb testing.TB) []byte { return udpPacket(tb, lan1Host, lan2Host, 0xb9, 1476, true) }},
		{name: "sender on this host", pmtu: 1400, want: 1376, local: true, inner: func(tb testing.TB) []byte { return udpPacket(tb, overlay, lan2Host, 0, 1476, true) }},
		{name: "without DF sent as ip_gre sends it", pmtu: 1400, inner: func(tb testing.TB) []byte { return udpPacket(tb, lan1Host, lan2Host, 0, 1476, false) }},
		{name: "expired", pmtu: 1400, expired: true, inner: func(tb testing.TB) []byte { return udpPacket(tb, lan1Host, lan2Host, 0, 1476, true) }},
		{name: "no error about an error", pmtu: 1400, drop: true, inner: func(tb testing.TB) []byte {
			b := fragNeeded(tb, macTun, macTun, lan1Host, lan2Host, 0, 1000, make([]byte, 1476-28))[14:]
			b[6] |= 0x40 // DF
			b[10], b[11] = 0, 0
			binary.BigEndian.PutUint16(b[10:], ^onesSum(b[:20]))
			return b
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wan := wanNS(t, true)
			lanSide(t, true)
			link := tunnelDevs(t, wan)
			tun := testTunnel(c.key, link, tunnel.RPStrict)
			objs := loadOn(t, tun)
			m := &objs.GrebpfMaps
			must(t, maps.SetICMPSources(m, lanAddrs(t)))
			if c.pmtu != 0 {
				left := pmtuExpires
				if c.expired {
					left = -time.Second
				}
				setPathMTU(t, m, tun, c.pmtu, left)
			}
			if c.wanMTU != 0 {
				l, err := netlink.LinkByIndex(wan)
				must(t, err)
				must(t, netlink.LinkSetMTU(l, c.wanMTU))
			}
			inner := c.inner(t)
			in := frame(t, macTun, macTun, inner)
			before := snapshot(t, m)
			verdict, out := run(t, objs.EncapTc, in, skbContext{Ifindex: link.PeerIfindex})
			reasons, moved := delta(before, snapshot(t, m))
			switch {
			case c.drop:
				if verdict != tcShot || len(reasons) != 1 || reasons["frag-needed"] != 1 || moved != (tunnel.Counters{}) {
					t.Errorf("verdict %d, counters %v %+v: want a drop counted frag-needed", verdict, reasons, moved)
				}
			case c.want == 0:
				if verdict != tcRedirect || len(reasons) != 0 || moved != (tunnel.Counters{TxPackets: 1, TxBytes: uint64(len(inner))}) {
					t.Fatalf("verdict %d, counters %v %+v: want encapsulated and sent", verdict, reasons, moved)
				}
				want := expectedEncap(t, inner, 0, 64, 0, c.key)
				if d := diff(anyID(out), anyID(want)); d != "" {
					t.Errorf("encapsulated frame:%s", d)
				}
			default:
				if verdict != tcRedirect || len(reasons) != 1 || reasons["frag-needed"] != 1 || moved != (tunnel.Counters{}) {
					t.Fatalf("verdict %d, counters %v %+v: want the ICMP sent, counted frag-needed", verdict, reasons, moved)
				}
				src, dstMAC, srcMAC := net.IPv4(172, 16, 100, 254).To4(), macLANHost, macWAN
				if c.local {
					src, dstMAC, srcMAC = overlay, macTun, macTun
				}
				tos := 0xc0 | inner[1]&0x1e
				want := fragNeeded(t, dstMAC, srcMAC, src, inner[12:16], tos, c.want, inner[:min(len(inner), 548)])
				if d := diff(anyID(out), anyID(want)); d != "" {
					t.Errorf("ICMP:%s", d)
				}
			}
		})
	}
}

// lanAddrs is what the loader gives the programs as ICMP sources in
// lanSide's namespace: lan0's address.
func lanAddrs(tb testing.TB) map[uint32]netip.Addr {
	tb.Helper()
	l, err := netlink.LinkByName("lan0")
	must(tb, err)
	return map[uint32]netip.Addr{uint32(l.Attrs().Index): netip.MustParseAddr("172.16.100.254")}
}

// TestFastpathLANOverPathMTU: the fast path leaves a packet over the
// learned path MTU to the stack, whose route into the tunnel reaches
// encap_tc, which answers the sender.
func TestFastpathLANOverPathMTU(t *testing.T) {
	for _, size := range []int{1376, 1377} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			wan := wanNS(t, true)
			lan := lanSide(t, true)
			tun := testTunnel(nil, tunnelDevs(t, wan), tunnel.RPStrict)
			objs := loadOn(t, tun)
			setPathMTU(t, &objs.GrebpfMaps, tun, 1400, pmtuExpires)
			in := frame(t, macWAN, macLANHost, udpPacket(t, lan1Host, lan2Host, 0, size, true))
			verdict, _ := run(t, objs.FastpathLan, in, xdpContext{DataEnd: uint32(len(in)), IngressIfindex: uint32(lan)})
			if want := map[bool]uint32{true: xdpRedirect, false: xdpPass}[size+24 <= 1400]; verdict != want {
				t.Errorf("%d-byte packet: verdict %d, want %d", size, verdict, want)
			}
		})
	}
}
