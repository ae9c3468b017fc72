package bpf_test

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/grebpf/grebpf/bpf"
	"github.com/grebpf/grebpf/internal/testutil"
)

const xdpTX = 3

func loadBench(tb testing.TB, flows uint16) *bpf.BenchObjects {
	tb.Helper()
	testutil.NeedRoot(tb)
	spec, err := bpf.LoadBench()
	must(tb, err)
	must(tb, spec.Variables["bench_port"].Set(uint16(9)))
	must(tb, spec.Variables["bench_flows"].Set(flows))
	var objs bpf.BenchObjects
	must(tb, spec.LoadAndAssign(&objs, nil))
	tb.Cleanup(func() { objs.Close() })
	return &objs
}

// benchFrame is a generated frame from source port sport to dport, UDP
// over IPv4 or (v6) IPv6, checksums right.
func benchFrame(tb testing.TB, sport, dport uint16, v6 bool) []byte {
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	if v6 {
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP, SrcIP: lan1Host6, DstIP: lan2Host6}
		udp.SetNetworkLayerForChecksum(ip)
		return serialize(tb, &layers.Ethernet{DstMAC: macR1, SrcMAC: macLANHost, EthernetType: layers.EthernetTypeIPv6},
			ip, udp, gopacket.Payload(make([]byte, 64-14-40-8)))
	}
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: lan1Host, DstIP: lan2Host}
	udp.SetNetworkLayerForChecksum(ip)
	return serialize(tb, &layers.Ethernet{DstMAC: macR1, SrcMAC: macLANHost, EthernetType: layers.EthernetTypeIPv4},
		ip, udp, gopacket.Payload(make([]byte, 64-14-20-8)))
}

// The generator writes its template whatever the page held before, and
// walks the source port through the flows, the UDP checksum kept right,
// over IPv4 and IPv6.
func TestGenerator(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		objs := loadBench(t, 3)
		must(t, objs.FrameTemplate.Set(benchFrame(t, 1024, 9, v6)))
		stale := make([]byte, 64) // a recycled page with someone else's bytes
		for i, wantPort := range []uint16{1025, 1026, 1024, 1025} {
			verdict, out := run(t, objs.GenXdp, stale, nil)
			if verdict != xdpTX {
				t.Fatalf("IPv6 %v, run %d: verdict %d, want XDP_TX", v6, i, verdict)
			}
			if d := diff(out, benchFrame(t, wantPort, 9, v6)); d != "" {
				t.Errorf("IPv6 %v, run %d:%s", v6, i, d)
			}
		}
	}
}

func TestSink(t *testing.T) {
	objs := loadBench(t, 1)
	for _, c := range []struct {
		port    uint16
		v6      bool
		verdict uint32
		counted uint64
	}{{9, false, xdpDrop, 1}, {53, false, xdpPass, 0}, {9, true, xdpDrop, 1}, {53, true, xdpPass, 0}} {
		var before, after []uint64
		must(t, objs.SinkPackets.Lookup(uint32(0), &before))
		verdict, _ := run(t, objs.SinkXdp, benchFrame(t, 1024, c.port, c.v6), nil)
		must(t, objs.SinkPackets.Lookup(uint32(0), &after))
		var n uint64
		for i := range after {
			n += after[i] - before[i]
		}
		if verdict != c.verdict || n != c.counted {
			t.Errorf("port %d, IPv6 %v: verdict %d counted %d, want %d and %d", c.port, c.v6, verdict, n, c.verdict, c.counted)
		}
	}
}

// Plain forwarding, in XDP (the baseline the fast path is held to) and at
// TC ingress (the bench's WAN router where the endpoints send skbs).
func TestForward(t *testing.T) {
	wanNS(t, true)
	lan := lanSide(t, true)
	objs := loadBench(t, 1)
	inner := innerPacket(t, lan2Host, lan1Host, 0, 64)
	in := frame(t, macR1, macWAN, inner)
	want := frame(t, macLANHost, macWAN, withTTL(t, inner, 63))
	for _, c := range []struct {
		prog     *ebpf.Program
		ctx      any
		redirect uint32
	}{
		{objs.FwdXdp, xdpContext{DataEnd: uint32(len(in)), IngressIfindex: uint32(lan)}, xdpRedirect},
		{objs.FwdTc, skbContext{Ifindex: uint32(lan)}, tcRedirect},
	} {
		verdict, out := run(t, c.prog, in, c.ctx)
		if verdict != c.redirect {
			t.Fatalf("%v: verdict %d, want %d (redirect)", c.prog, verdict, c.redirect)
		}
		if d := diff(out, want); d != "" {
			t.Errorf("%v: forwarded frame:%s", c.prog, d)
		}
	}
}
