package bpf_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/grebpf/grebpf/bpf"
	"github.com/grebpf/grebpf/internal/testutil"
	"github.com/grebpf/grebpf/maps"
)

// Verdicts as the kernel returns them from BPF_PROG_TEST_RUN.
const (
	xdpDrop     = 1
	xdpPass     = 2
	tcOK        = 0
	tcShot      = 2
	tcRedirect  = 7
	testKey     = 0x2a
	reasonCount = int(bpf.GrebpfReasonREASON_MAX)
)

var (
	wanLocal   = netip.MustParseAddr("10.100.0.1")
	wanRemote  = netip.MustParseAddr("10.200.0.1")
	overlayR1  = netip.MustParseAddr("192.168.1.1")
	overlayR2  = netip.MustParseAddr("192.168.1.2")
	lan1Host   = net.IPv4(172, 16, 100, 1).To4()
	lan2Host   = net.IPv4(172, 16, 200, 1).To4()
	macR1      = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	macWAN     = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xfe}
	macOverlay = net.HardwareAddr{0x02, 0, 'g', 'r', 'e', 0}
)

// load loads the programs with fresh, unpinned maps and one tunnel r1 → r2
// (keyed when key is set) routing 172.16.200.0/24.
func load(tb testing.TB, key *uint32) *bpf.GrebpfObjects {
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
	putTunnel(tb, &objs.GrebpfMaps, maps.Tunnel{
		ID: 1, Name: "gre1", Local: wanLocal, Remote: wanRemote, Key: key,
		TTL: 64, TOSInherit: true, MTU: 1476, OverlayLocal: overlayR1, OverlayRemote: overlayR2,
	})
	if err := maps.PutRoute(&objs.GrebpfMaps, netip.MustParsePrefix("172.16.200.0/24"), 1); err != nil {
		tb.Fatal(err)
	}
	return &objs
}

func putTunnel(tb testing.TB, m *maps.Maps, t maps.Tunnel) {
	tb.Helper()
	if err := maps.PutTunnel(m, t); err != nil {
		tb.Fatal(err)
	}
}

// counts is a snapshot of every counter, to check that exactly the
// expected one moved.
type counts struct {
	reasons []uint64
	tunnel  maps.Counters
}

func snapshot(tb testing.TB, m *maps.Maps) counts {
	tb.Helper()
	r, err := maps.ReasonCounts(m)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := maps.TunnelCounters(m, 1)
	if err != nil {
		tb.Fatal(err)
	}
	return counts{r, c}
}

// delta reports which counters moved between two snapshots.
func delta(before, after counts) (reasons map[string]uint64, tunnel maps.Counters) {
	reasons = map[string]uint64{}
	for i := range after.reasons {
		if d := after.reasons[i] - before.reasons[i]; d != 0 {
			reasons[maps.ReasonName(maps.Reason(i))] = d
		}
	}
	tunnel = maps.Counters{
		RxPackets: after.tunnel.RxPackets - before.tunnel.RxPackets,
		RxBytes:   after.tunnel.RxBytes - before.tunnel.RxBytes,
		TxPackets: after.tunnel.TxPackets - before.tunnel.TxPackets,
		TxBytes:   after.tunnel.TxBytes - before.tunnel.TxBytes,
	}
	return reasons, tunnel
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
