package bpf_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netlink"

	"github.com/grebpf/grebpf/bpf"
	"github.com/grebpf/grebpf/internal/testutil"
	"github.com/grebpf/grebpf/internal/tunnel"
	"github.com/grebpf/grebpf/maps"
)

// Verdicts as the kernel returns them from BPF_PROG_TEST_RUN.
const (
	xdpDrop     = 1
	xdpPass     = 2
	xdpRedirect = 4
	tcOK        = 0
	tcShot      = 2
	tcRedirect  = 7
	testKey     = 0x2a
	reasonCount = int(bpf.GrebpfReasonREASON_MAX)
)

var (
	wanLocal  = netip.MustParseAddr("10.100.0.1")
	wanRemote = netip.MustParseAddr("10.200.0.1")
	overlayR1 = netip.MustParseAddr("192.168.1.1")
	overlayR2 = netip.MustParseAddr("192.168.1.2")
	lan1Host  = net.IPv4(172, 16, 100, 1).To4()
	lan2Host  = net.IPv4(172, 16, 200, 1).To4()
	macR1     = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	macWAN    = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xfe}
)

// The tunnel interface pair the tests configure where no namespace gives
// the tunnel real devices: the programs only use the indices as keys and
// the MACs as bytes.
var (
	macTun     = net.HardwareAddr{0x02, 0, 't', 'u', 'n', 0x01}
	macTunPeer = net.HardwareAddr{0x02, 0, 't', 'u', 'n', 0x02}
	fakeLink   = tunnel.Link{Ifindex: 1000, PeerIfindex: 1001, MAC: [6]byte(macTun), PeerMAC: [6]byte(macTunPeer)}
)

// testTunnel is r1's tunnel to r2 (keyed both ways when key is set) on link.
func testTunnel(key *uint32, link tunnel.Link, rp tunnel.RPFilter) tunnel.Tunnel {
	return tunnel.Tunnel{Name: "gre1", Local: wanLocal, Remote: wanRemote, IKey: key, OKey: key, TTL: 64, TOSInherit: true,
		RPFilter: rp, MTU: 1476, OverlayLocal: overlayR1, OverlayRemote: overlayR2, Link: link}
}

// load loads the programs with fresh, unpinned maps and r1's tunnel on
// fakeLink, without the inner source check (it needs a FIB: see loadOn).
func load(tb testing.TB, key *uint32) *bpf.GrebpfObjects {
	return loadOn(tb, testTunnel(key, fakeLink, tunnel.RPOff))
}

// loadOn loads the programs with fresh, unpinned maps and tunnel t.
func loadOn(tb testing.TB, t tunnel.Tunnel) *bpf.GrebpfObjects {
	tb.Helper()
	testutil.NeedRoot(tb)
	var objs bpf.GrebpfObjects
	if err := bpf.LoadGrebpfObjects(&objs, nil); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			tb.Fatalf("%+v", verr)
		}
		tb.Fatal(err)
	}
	tb.Cleanup(func() { objs.Close() })
	putTunnel(tb, &objs.GrebpfMaps, t)
	return &objs
}

func putTunnel(tb testing.TB, m *maps.Maps, t tunnel.Tunnel) {
	tb.Helper()
	if err := maps.PutTunnel(m, t); err != nil {
		tb.Fatal(err)
	}
}

// tunnelDevs adds to the test's namespace the interface of r1's tunnel as
// attach makes it: gre1 (macTun, MTU 1476, 192.168.1.1 peer 192.168.1.2)
// and its peer gre1p (macTunPeer), both up, 172.16.200.0/24 routed through
// gre1, and returns the link for a tunnel on wan.
func tunnelDevs(tb testing.TB, wan int) tunnel.Link {
	tb.Helper()
	must(tb, netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "gre1", HardwareAddr: macTun, MTU: 1476},
		PeerName: "gre1p", PeerHardwareAddr: macTunPeer, PeerMTU: 1476}))
	l, err := netlink.LinkByName("gre1")
	must(tb, err)
	p, err := netlink.LinkByName("gre1p")
	must(tb, err)
	must(tb, netlink.LinkSetARPOff(l))
	must(tb, netlink.LinkSetUp(l))
	must(tb, netlink.LinkSetUp(p))
	host := func(a netip.Addr) *net.IPNet { return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)} }
	must(tb, netlink.AddrAdd(l, &netlink.Addr{IPNet: host(overlayR1), Peer: host(overlayR2)}))
	must(tb, netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: &net.IPNet{IP: lan2Host.Mask(net.CIDRMask(24, 32)), Mask: net.CIDRMask(24, 32)}}))
	return tunnel.Link{Ifindex: uint32(l.Attrs().Index), PeerIfindex: uint32(p.Attrs().Index), WANIfindex: uint32(wan),
		MAC: [6]byte(macTun), PeerMAC: [6]byte(macTunPeer)}
}

// counts is a snapshot of every counter, to check that exactly the
// expected one moved.
type counts struct {
	reasons []uint64
	tunnel  tunnel.Counters
}

// snapshot sums the counters of every tunnel in the maps: the tests
// configure one.
func snapshot(tb testing.TB, m *maps.Maps) counts {
	tb.Helper()
	r, err := maps.ReasonCounts(m)
	if err != nil {
		tb.Fatal(err)
	}
	ts, err := maps.Tunnels(m)
	if err != nil {
		tb.Fatal(err)
	}
	var sum tunnel.Counters
	for _, t := range ts {
		c, err := maps.TunnelCounters(m, t.Link.Ifindex)
		if err != nil {
			tb.Fatal(err)
		}
		sum.RxPackets += c.RxPackets
		sum.RxBytes += c.RxBytes
		sum.TxPackets += c.TxPackets
		sum.TxBytes += c.TxBytes
	}
	return counts{r, sum}
}

// delta reports which counters moved between two snapshots.
func delta(before, after counts) (reasons map[string]uint64, moved tunnel.Counters) {
	reasons = map[string]uint64{}
	for i := range after.reasons {
		if d := after.reasons[i] - before.reasons[i]; d != 0 {
			reasons[maps.ReasonName(maps.Reason(i))] = d
		}
	}
	moved = tunnel.Counters{
		RxPackets: after.tunnel.RxPackets - before.tunnel.RxPackets,
		RxBytes:   after.tunnel.RxBytes - before.tunnel.RxBytes,
		TxPackets: after.tunnel.TxPackets - before.tunnel.TxPackets,
		TxBytes:   after.tunnel.TxBytes - before.tunnel.TxBytes,
	}
	return reasons, moved
}

// toTunnel is a decapsulated frame as decap hands it to the tunnel
// interface: from its veth peer, to it.
func toTunnel(tb testing.TB, inner []byte) []byte {
	return frame(tb, macTun, macTunPeer, inner)
}

// withMeta is an XDP frame as BPF_PROG_TEST_RUN returns it, metadata
// first: decap_xdp's note to to_tunnel_tc naming the tunnel interface.
func withMeta(ifindex uint32, frame []byte) []byte {
	meta := binary.NativeEndian.AppendUint32(nil, 0x67726531)
	meta = binary.NativeEndian.AppendUint32(meta, ifindex)
	return append(meta, frame...)
}

func serialize(tb testing.TB, ls ...gopacket.SerializableLayer) []byte {
	tb.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		tb.Fatal(err)
	}
	return bytes.Clone(buf.Bytes())
}

// innerPacket is an ICMP echo lan1 → lan2 (or the reverse), IPv4 header included.
func innerPacket(tb testing.TB, src, dst net.IP, tos, ttl uint8) []byte {
	tb.Helper()
	ip := &layers.IPv4{Version: 4, IHL: 5, TOS: tos, TTL: ttl, Id: 0x1234, Flags: layers.IPv4DontFragment,
		Protocol: layers.IPProtocolICMPv4, SrcIP: src, DstIP: dst}
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 7, Seq: 1}
	return serialize(tb, ip, icmp, gopacket.Payload("grebpf test payload"))
}

// frame puts an Ethernet header in front of an IPv4 packet.
func frame(tb testing.TB, dst, src net.HardwareAddr, l3 []byte) []byte {
	tb.Helper()
	eth := &layers.Ethernet{DstMAC: dst, SrcMAC: src, EthernetType: layers.EthernetTypeIPv4}
	return serialize(tb, eth, gopacket.Payload(l3))
}

// greFrame is what r2 sends r1: outer IPv4 (DF, TTL 64) + GRE + inner.
func greFrame(tb testing.TB, src, dst netip.Addr, g *layers.GRE, inner []byte) []byte {
	tb.Helper()
	eth := &layers.Ethernet{DstMAC: macR1, SrcMAC: macWAN, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Id: 0x4242, Flags: layers.IPv4DontFragment,
		Protocol: layers.IPProtocolGRE, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	return serialize(tb, eth, ip, g, gopacket.Payload(inner))
}

func diff(got, want []byte) string {
	if bytes.Equal(got, want) {
		return ""
	}
	return fmt.Sprintf("\n got %s\nwant %s", hex.EncodeToString(got), hex.EncodeToString(want))
}

// run runs prog once over data and returns the verdict and output frame.
func run(tb testing.TB, prog *ebpf.Program, data []byte, ctx any) (uint32, []byte) {
	tb.Helper()
	out := make([]byte, len(data)+256)
	opts := &ebpf.RunOptions{Data: data, DataOut: out}
	if ctx != nil {
		opts.Context = ctx
	}
	ret, err := prog.Run(opts)
	if err != nil {
		tb.Fatalf("prog.Run: %v", err)
	}
	return ret, opts.DataOut
}
