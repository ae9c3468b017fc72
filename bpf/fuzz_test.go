package bpf_test

import (
	"bytes"
	"encoding/binary"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/grebpf/grebpf/bpf"
	"github.com/grebpf/grebpf/internal/tunnel"
	"github.com/grebpf/grebpf/maps"
)

// FuzzDecap feeds arbitrary frames to the XDP decap program. Whatever the
// input: the verdict is pass or drop, exactly one counter moves (rx or one
// reason), and a changed frame is the input minus the outer IPv4 + GRE
// headers of a packet from the configured peer, addressed to the tunnel
// interface, with the metadata that names it.
func FuzzDecap(f *testing.F) {
	inner := innerPacket(f, lan2Host, lan1Host, 0, 63)
	for _, c := range decapCases {
		f.Add(c.frame(f, inner))
	}
	// Outer ECN CE over ECN-capable and Not-ECT inner packets.
	for _, tos := range []uint8{0x02, 0x00} {
		in := greFrame(f, wanRemote, wanLocal, plainGRE(), innerPacket(f, lan2Host, lan1Host, tos, 63))
		in[15] = 0x03
		f.Add(refreshOuterChecksum(in))
	}
	// "Frag needed" about our outer packets, as routers quote them.
	for _, n := range []int{28, 548} {
		f.Add(fromWANRouter(f, 1400, outerOf(f, plainGRE(), inner), n))
	}
	// IPv6 inside, outer CE over it.
	for _, tc := range []uint8{0x02, 0x00} {
		in := greFrame(f, wanRemote, wanLocal, greIPv6(), innerPacket6(f, lan2Host6, lan1Host6, tc, 63))
		in[15] = 0x03
		f.Add(refreshOuterChecksum(in))
	}
	objs := load(f, nil)
	f.Fuzz(func(t *testing.T, in []byte) {
		fuzzDecapXDP(t, objs, in, func() []byte {
			strip := greStrip(in)
			if !bytes.Equal(in[14+12:14+20], append(wanRemote.AsSlice(), wanLocal.AsSlice()...)) {
				t.Fatalf("decapsulated a packet not from the configured peer: %x", in)
			}
			l3 := bytes.Clone(in[14+strip:])
			ecnDecap(in[15], l3)
			return append(append(append(bytes.Clone(macTun), macTunPeer...), greProtocol(in)...), l3...)
		})
	})
}

// fuzzDecapXDP runs decap_xdp over in and checks what holds for any
// input: a pass or a drop, exactly one counter moved (rx or one reason);
// a decapsulated frame is, after the metadata naming the tunnel, what
// decapsulated says (which checks the input was the peer's); anything
// else is unchanged, its reason's action the verdict.
func fuzzDecapXDP(t *testing.T, objs *bpf.GrebpfObjects, in []byte, decapsulated func() []byte) {
	t.Helper()
	if len(in) < 14 {
		return // BPF_PROG_TEST_RUN refuses frames shorter than Ethernet
	}
	before := snapshot(t, &objs.GrebpfMaps)
	verdict, out := run(t, objs.DecapXdp, in, nil)
	reasons, tunnel := delta(before, snapshot(t, &objs.GrebpfMaps))
	moved := len(reasons)
	if tunnel.RxPackets != 0 {
		moved++
	}
	if moved != 1 {
		t.Fatalf("%d counters moved (%v %+v), want exactly one", moved, reasons, tunnel)
	}
	switch {
	case verdict != xdpPass && verdict != xdpDrop:
		t.Fatalf("verdict %d", verdict)
	case tunnel.RxPackets == 1:
		if verdict != xdpPass {
			t.Fatalf("decapsulated but verdict %d", verdict)
		}
		if want := withMeta(fakeLink.Ifindex, decapsulated()); !bytes.Equal(out, want) {
			t.Fatalf("decapsulated frame:%s", diff(out, want))
		}
	default:
		if !bytes.Equal(out, in) {
			t.Fatalf("not decapsulated, yet changed:%s", diff(out, in))
		}
		for name := range reasons {
			if r := reasonByName(t, name); (verdict == xdpDrop) != maps.ReasonDrops(r) {
				t.Fatalf("reason %s with verdict %d", name, verdict)
			}
		}
	}
}

// FuzzDecapOuterIPv6 is FuzzDecap for a tunnel over IPv6: a changed frame
// is the input minus the outer IPv6 header, any destination options and
// GRE of a packet from the configured peer, with the ECN field the
// traffic class gives it, addressed to the tunnel interface.
func FuzzDecapOuterIPv6(f *testing.F) {
	inner := innerPacket(f, lan2Host, lan1Host, 0x02, 63)
	for _, limit := range []int{4, -1} {
		f.Add(fromR2v6(f, limit, plainGRE(), inner))
		f.Add(fromR2v6(f, limit, plainGRE(), innerPacket6(f, lan2Host6, lan1Host6, 0x02, 63)))
		ce := fromR2v6(f, limit, plainGRE(), inner)
		ce[15] |= 0x30
		f.Add(ce)
	}
	quote := expectedEncap6(f, inner, 0x777, 64, 0, nil, ip6greEncapLimit)[14:]
	f.Add(packetTooBig(f, macR1, macWAN, wanGateway6, wanLocal6.AsSlice(), 0, 1400, quote))
	objs := loadOn(f, testTunnel6(nil, fakeLink, tunnel.RPOff))
	f.Fuzz(func(t *testing.T, in []byte) {
		fuzzDecapXDP(t, objs, in, func() []byte {
			if len(in) < 54 || in[12] != 0x86 || in[13] != 0xdd ||
				!bytes.Equal(in[22:54], append(wanRemote6.AsSlice(), wanLocal6.AsSlice()...)) {
				t.Fatalf("decapsulated a packet not GRE over IPv6 from the configured peer: %x", in)
			}
			gre := 54
			if in[20] == 60 {
				gre += (int(in[55]) + 1) * 8
			}
			strip := gre - 14 + 4
			if in[gre]&0x10 != 0 {
				strip += 4
			}
			l3 := bytes.Clone(in[14+strip:])
			ecnDecap(in[15]>>4, l3)
			return append(append(append(bytes.Clone(macTun), macTunPeer...), in[gre+2:gre+4]...), l3...)
		})
	})
}

// greProtocol is the GRE header's protocol type in a GRE frame: the
// EtherType of the inner packet.
func greProtocol(in []byte) []byte {
	ihl := int(in[14]&0x0f) * 4
	return in[14+ihl+2 : 14+ihl+4]
}

// greStrip is how many bytes follow Ethernet before the inner packet of a
// GRE frame the unkeyed test tunnel decapsulated: the outer header, GRE,
// and the sequence number if there is one.
func greStrip(in []byte) int {
	ihl := int(in[14]&0x0f) * 4
	if in[14+ihl]&0x10 != 0 {
		return ihl + 8
	}
	return ihl + 4
}

// fuzzNS is the namespace a fuzz target set up (the FIB its programs look
// up): each input runs in it, on whichever goroutine the fuzzer uses.
type fuzzNS int

// here returns the calling test's namespace, made by wanNS.
func here(tb testing.TB) fuzzNS {
	fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	must(tb, err)
	tb.Cleanup(func() { unix.Close(fd) })
	return fuzzNS(fd)
}

func (ns fuzzNS) do(t *testing.T, fn func()) {
	runtime.LockOSThread()
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	must(t, err)
	defer unix.Close(orig)
	must(t, unix.Setns(int(ns), unix.CLONE_NEWNET))
	fn()
	if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
		t.Fatalf("back to the original namespace: %v", err) // the thread stays locked and dies
	}
	runtime.UnlockOSThread()
}

// runnable says whether BPF_PROG_TEST_RUN takes in as a frame: Ethernet
// at least, at most what one Ethernet frame carries (the programs are
// not frags-aware), and for an skb a whole IPv4 or IPv6 header.
func runnable(in []byte, skb bool) bool {
	if len(in) < 14 || len(in) > 1514 {
		return false
	}
	switch binary.BigEndian.Uint16(in[12:]) {
	case 0x0800:
		return !skb || len(in) >= 34
	case 0x86dd:
		return !skb || len(in) >= 54
	}
	return true
}

// movedOne checks the one-counter invariant and returns the reasons that
// moved and the tunnel counters' change.
func movedOne(t *testing.T, before counts, m *maps.Maps) (map[string]uint64, tunnel.Counters) {
	reasons, tun := delta(before, snapshot(t, m))
	moved := len(reasons)
	if tun.RxPackets != 0 || tun.TxPackets != 0 {
		moved++
	}
	if moved > 1 || tun.RxPackets > 1 || tun.TxPackets > 1 {
		t.Fatalf("counters moved: %v %+v, want at most one by one", reasons, tun)
	}
	for name, n := range reasons {
		if n != 1 {
			t.Fatalf("reason %s moved by %d", name, n)
		}
	}
	return reasons, tun
}

// decTTL is ip_decrease_ttl on a raw IPv4 header: TTL - 1, checksum
// updated incrementally, in the host's byte order as the kernel does it;
// on an IPv6 header (v6), ip6_forward's hop limit - 1.
func decTTL(ip []byte, v6 bool) {
	if v6 {
		ip[7]--
		return
	}
	check := uint32(binary.NativeEndian.Uint16(ip[10:]))
	check += uint32(binary.NativeEndian.Uint16([]byte{0x01, 0x00}))
	if check >= 0xffff {
		check++
	}
	binary.NativeEndian.PutUint16(ip[10:], uint16(check))
	ip[8]--
}

// htons is the host-order value whose bytes in memory are v in network order.
func htons(v uint16) uint32 {
	return uint32(binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, v)))
}

// ecnDecap is ip_gre's INET_ECN_decapsulate on a delivered inner IPv4 or
// IPv6 header (RFC 6040: outer CE marks an ECN-capable packet CE, outer ECT(1)
// turns ECT(0) into ECT(1)), with the checksum updated incrementally in
// the host's byte order as the kernel's IP_ECN_set_ce and
// IP_ECN_set_ect1 do: a fuzzed header's checksum need not be right.
func ecnDecap(outerTOS byte, ip []byte) {
	if ip[0]>>4 == 6 {
		// The traffic class's ECN bits, bits 4 and 5 of the second byte.
		switch o, i := outerTOS&3, ip[1]>>4&3; {
		case i == 0:
		case o == 3:
			ip[1] |= 0x30
		case o == 1 && i == 2:
			ip[1] ^= 0x30
		}
		return
	}
	check := uint32(binary.NativeEndian.Uint16(ip[10:]))
	switch o, i := outerTOS&3, ip[1]&3; {
	case i == 0:
		return
	case o == 3:
		ecn := uint32(ip[1]+1) & 3
		if ecn&2 == 0 {
			return
		}
		check += htons(0xfffb) + htons(uint16(ecn))
		ip[1] |= 3
	case o == 1 && i == 2:
		check += htons(1)
		ip[1] ^= 3
	default:
		return
	}
	if check >= 0xffff {
		check++
	}
	binary.NativeEndian.PutUint16(ip[10:], uint16(check))
}

// encapOf is the frame ip_gre sends for the IPv4 or IPv6 (v6: what the
// EtherType says, as skb->protocol tells ip_gre) packet l3 over the plain
// test tunnel (TTL 64, TOS inherited from the TOS or traffic
// class, ECN CE sent as ECT(0)): outer IPv4 with DF and the given id,
// GRE, l3 as it is; totLen is the outer total length.
func encapOf(l3 []byte, v6 bool, id uint16, totLen int) []byte {
	tos, gre := l3[1], []byte{0x00, 0x00, 0x08, 0x00}
	if v6 {
		tos, gre = l3[0]<<4|l3[1]>>4, []byte{0x00, 0x00, 0x86, 0xdd}
	}
	if tos&3 == 3 {
		tos = tos&^3 | 2
	}
	hdr := []byte{0x45, tos, byte(totLen >> 8), byte(totLen), byte(id >> 8), byte(id), 0x40, 0, 64, 47, 0, 0}
	hdr = append(append(hdr, wanLocal.AsSlice()...), wanRemote.AsSlice()...)
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(hdr[i])<<8 | uint32(hdr[i+1])
	}
	sum = sum&0xffff + sum>>16
	sum = sum&0xffff + sum>>16
	binary.BigEndian.PutUint16(hdr[10:], ^uint16(sum))
	out := append(append(bytes.Clone(macWAN), macR1...), 0x08, 0x00)
	out = append(append(out, hdr...), gre...)
	return append(out, l3...)
}

// FuzzEncap feeds arbitrary frames to encap on the tunnel interface's
// veth peer: exactly one counter moves; a frame sent on (tx counted) is
// the input's L3 under exactly ip_gre's outer headers; a dropped one
// names a reason.
func FuzzEncap(f *testing.F) {
	wan := wanNS(f, true)
	lan := lanSide(f, true)
	link := tunnelDevs(f, wan)
	ipv6Side(f, link)
	tun := testTunnel(nil, link, tunnel.RPStrict)
	objs := loadOn(f, tun)
	srcs := lanAddrs(f)
	srcs[uint32(wan)] = wanLocal
	must(f, maps.SetICMPSources(&objs.GrebpfMaps, ipv6Sources(srcs, lan, link)))
	// Packets over 1376 bytes with DF are answered "frag needed", IPv6
	// ones "packet too big".
	setPathMTU(f, &objs.GrebpfMaps, tun, 1400, time.Hour)
	ns := here(f)
	for _, tos := range []uint8{0, 0xb8, 0x03} {
		f.Add(frame(f, macTun, macTun, innerPacket(f, lan1Host, lan2Host, tos, 63)))
		f.Add(frame(f, macTun, macTun, innerPacket6(f, lan1Host6, lan2Host6, tos, 63)))
	}
	f.Add(frame(f, macTun, macTun, []byte{0x45}))
	for _, src := range []net.IP{lan1Host, overlayR1.AsSlice(), net.IPv4(10, 100, 0, 7), lan2Host} {
		f.Add(frame(f, macTun, macTun, udpPacket(f, src, lan2Host, 0xb9, 1477, true)))
	}
	for _, src := range []net.IP{lan1Host6, overlay6R1.AsSlice(), net.ParseIP("fe80::1"), lan2Host6, net.ParseIP("2001:db8:999::1")} {
		f.Add(frame(f, macTun, macTun, udpPacket6(f, src, lan2Host6, 1477)))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if !runnable(in, true) {
			return
		}
		ns.do(t, func() {
			before := snapshot(t, &objs.GrebpfMaps)
			verdict, out := run(t, objs.EncapTc, in, skbContext{Ifindex: link.PeerIfindex})
			reasons, tun := movedOne(t, before, &objs.GrebpfMaps)
			switch {
			case verdict == tcRedirect && reasons["frag-needed"] == 1:
				want := fragNeededFor(t, in[14:], 1376)
				if len(out) < 34 || !bytes.Equal(anyID(out)[12:], anyID(want)[12:]) {
					t.Fatalf("frag needed:%s", diff(anyID(out)[min(12, len(out)):], anyID(want)[12:]))
				}
			case verdict == tcRedirect && reasons["packet-too-big"] == 1:
				want := packetTooBigFor(t, in[14:], 1376, flowLabel(out))
				if len(out) < 54 || !bytes.Equal(out[12:], want[12:]) {
					t.Fatalf("packet too big:%s", diff(out[min(12, len(out)):], want[12:]))
				}
			case verdict == tcRedirect:
				if tun.TxPackets != 1 || len(out) < 34 {
					t.Fatalf("redirected with counters %v %+v, output %x", reasons, tun, out)
				}
				id := binary.BigEndian.Uint16(out[18:])
				if want := encapOf(in[14:], isIPv6(in), id, len(in)-14+24); !bytes.Equal(out, want) {
					t.Fatalf("encapsulated frame:%s", diff(out, want))
				}
			case verdict == tcShot:
				if len(reasons) != 1 {
					t.Fatalf("dropped with counters %v %+v", reasons, tun)
				}
			default:
				t.Fatalf("verdict %d", verdict)
			}
		})
	})
}

// fragNeededFor is, past the MACs, the "fragmentation needed" icmp_send
// would send about the IPv4 packet l3 for a tunnel MTU of mtu: from the
// source address of the kernel's route back to the sender (the sender's
// own address when it is this host's), quoting up to 548 bytes.
func fragNeededFor(tb testing.TB, l3 []byte, mtu uint16) []byte {
	tb.Helper()
	sender := net.IP(l3[12:16])
	rs, err := netlink.RouteGet(sender)
	if err != nil || len(rs) == 0 {
		tb.Fatalf("the kernel has no route back to %s (%v), yet ICMP went there", sender, err)
	}
	src := rs[0].Src
	if rs[0].Type == unix.RTN_LOCAL {
		src = sender
	}
	return fragNeeded(tb, macTun, macTun, src.To4(), sender, 0xc0|l3[1]&0x1e, mtu, l3[:min(len(l3), 548)])
}

// packetTooBigFor is the "packet too big" icmp6_send would send about the
// IPv6 packet l3 for a tunnel MTU of mtu (compare it past the MACs): from
// the source of the kernel's route back to the sender (the sender's own
// address when it is this host's: an address of its own, or link-local),
// quoting up to 1232 bytes, with the flow label given.
func packetTooBigFor(tb testing.TB, l3 []byte, mtu, flow uint32) []byte {
	tb.Helper()
	sender := net.IP(l3[8:24])
	src := sender
	if !sender.IsLinkLocalUnicast() {
		rs, err := netlink.RouteGet(sender)
		if err != nil || len(rs) == 0 {
			tb.Fatalf("the kernel has no route back to %s (%v), yet ICMPv6 went there", sender, err)
		}
		if rs[0].Type != unix.RTN_LOCAL {
			src = rs[0].Src
		}
	}
	return packetTooBig(tb, macTun, macTun, src, sender, flow, mtu, l3[:min(len(l3), 1232)])
}

// isIPv6 says whether a frame's EtherType is IPv6.
func isIPv6(frame []byte) bool { return binary.BigEndian.Uint16(frame[12:]) == 0x86dd }

// l3Len is the length an IPv4 or IPv6 (v6) header gives its packet.
func l3Len(l3 []byte, v6 bool) int {
	if v6 {
		return 40 + int(binary.BigEndian.Uint16(l3[4:]))
	}
	return int(binary.BigEndian.Uint16(l3[2:]))
}

// FuzzFastpathLAN feeds arbitrary frames to the LAN fast path: a frame
// left to the stack is unchanged and counted nowhere; a frame sent on is
// counted as tx and is the input's packet, TTL decremented as forwarding
// does, under exactly ip_gre's outer headers.
func FuzzFastpathLAN(f *testing.F) {
	wan := wanNS(f, true)
	lan := lanSide(f, true)
	link := tunnelDevs(f, wan)
	ipv6Side(f, link)
	objs := loadOn(f, testTunnel(nil, link, tunnel.RPStrict))
	ns := here(f)
	f.Add(frame(f, macWAN, macLANHost, innerPacket(f, lan1Host, lan2Host, 0, 64)))
	f.Add(frame(f, macWAN, macLANHost, innerPacket(f, lan1Host, lan2Host, 0x03, 2)))
	f.Add(frame(f, macWAN, macLANHost, innerPacket(f, lan1Host, net.IPv4(10, 100, 0, 254), 0, 64)))
	f.Add(frame(f, macWAN, macLANHost, innerPacket6(f, lan1Host6, lan2Host6, 0x03, 64)))
	f.Add(frame(f, macWAN, macLANHost, innerPacket6(f, net.ParseIP("fe80::1"), lan2Host6, 0, 64)))
	f.Fuzz(func(t *testing.T, in []byte) {
		if !runnable(in, false) {
			return
		}
		ns.do(t, func() {
			before := snapshot(t, &objs.GrebpfMaps)
			verdict, out := run(t, objs.FastpathLan, in, xdpContext{DataEnd: uint32(len(in)), IngressIfindex: uint32(lan)})
			reasons, tun := movedOne(t, before, &objs.GrebpfMaps)
			switch verdict {
			case xdpPass:
				if len(reasons) != 0 || tun != (tunnel.Counters{}) || !bytes.Equal(out, in) {
					t.Fatalf("left to the stack with counters %v %+v, frame:%s", reasons, tun, diff(out, in))
				}
			case xdpRedirect:
				if tun.TxPackets != 1 {
					t.Fatalf("redirected with counters %v %+v", reasons, tun)
				}
				l3, v6 := bytes.Clone(in[14:]), isIPv6(in)
				decTTL(l3, v6)
				totLen := l3Len(l3, v6) + 24
				if want := encapOf(l3, v6, binary.BigEndian.Uint16(out[18:]), totLen); !bytes.Equal(out, want) {
					t.Fatalf("encapsulated frame:%s", diff(out, want))
				}
			default:
				t.Fatalf("verdict %d", verdict)
			}
		})
	})
}

// FuzzFastpathWAN feeds arbitrary frames to the WAN fast path: exactly
// one counter moves; a decapsulated packet (rx counted) either goes to
// the tunnel interface as decap_xdp hands it on, or is forwarded to the
// next hop the FIB names, TTL decremented as forwarding does; anything
// else is unchanged.
func FuzzFastpathWAN(f *testing.F) {
	wan := wanNS(f, true)
	lanSide(f, true)
	link := tunnelDevs(f, wan)
	ipv6Side(f, link)
	objs := loadOn(f, testTunnel(nil, link, tunnel.RPStrict))
	ns := here(f)
	for _, ttl := range []uint8{63, 1} {
		f.Add(greFrame(f, wanRemote, wanLocal, plainGRE(), innerPacket(f, lan2Host, lan1Host, 0, ttl)))
		f.Add(greFrame(f, wanRemote, wanLocal, greIPv6(), innerPacket6(f, lan2Host6, lan1Host6, 0, ttl)))
	}
	f.Add(greFrame(f, wanRemote, wanLocal, greIPv6(), innerPacket6(f, lan2Host6, net.ParseIP("fe80::1"), 0, 63)))
	f.Add(greFrame(f, wanRemote, wanLocal, plainGRE(), innerPacket(f, net.IPv4(8, 8, 8, 8), lan1Host, 0, 63)))
	f.Add(greFrame(f, wanRemote, wanLocal, keyedGRE(testKey), innerPacket(f, lan2Host, lan1Host, 0, 63)))
	f.Add(fromWANRouter(f, 1400, outerOf(f, plainGRE(), innerPacket(f, lan1Host, lan2Host, 0, 63)), 548))
	f.Fuzz(func(t *testing.T, in []byte) {
		if !runnable(in, false) {
			return
		}
		ns.do(t, func() {
			before := snapshot(t, &objs.GrebpfMaps)
			verdict, out := run(t, objs.FastpathWan, in, xdpContext{DataEnd: uint32(len(in)), IngressIfindex: uint32(wan)})
			reasons, tun := movedOne(t, before, &objs.GrebpfMaps)
			if tun.RxPackets == 0 {
				if len(reasons) != 1 || !bytes.Equal(out, in) || verdict != xdpPass && verdict != xdpDrop {
					t.Fatalf("verdict %d with counters %v %+v, frame:%s", verdict, reasons, tun, diff(out, in))
				}
				return
			}
			if !bytes.Equal(in[14+12:14+20], append(wanRemote.AsSlice(), wanLocal.AsSlice()...)) {
				t.Fatalf("decapsulated a packet not from the configured peer: %x", in)
			}
			l3 := bytes.Clone(in[14+greStrip(in):])
			ecnDecap(in[15], l3)
			var want []byte
			switch verdict {
			case xdpPass:
				want = withMeta(link.Ifindex, append(append(append(bytes.Clone(macTun), macTunPeer...), greProtocol(in)...), l3...))
			case xdpRedirect:
				// To the LAN host, or back out of the WAN device where the
				// FIB sends everything else (its IPv4 default route).
				dst, src := macWAN, macR1
				if len(l3) >= 20 && net.IP(l3[16:20]).Mask(net.CIDRMask(24, 32)).Equal(net.IPv4(172, 16, 100, 0)) ||
					len(l3) >= 40 && l3[0]>>4 == 6 && net.IP(l3[24:40]).Mask(net.CIDRMask(64, 128)).Equal(lan1Host6.Mask(net.CIDRMask(64, 128))) {
					dst, src = macLANHost, macWAN
				}
				decTTL(l3, greProtocol(in)[0] == 0x86)
				want = append(append(append(bytes.Clone(dst), src...), greProtocol(in)...), l3...)
			default:
				t.Fatalf("decapsulated, verdict %d", verdict)
			}
			if !bytes.Equal(out, want) {
				t.Fatalf("decapsulated frame (verdict %d):%s", verdict, diff(out, want))
			}
		})
	})
}
