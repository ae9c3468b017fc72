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
