package bpf_test

import (
	"encoding/binary"
	"testing"

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

func benchFrame(tb testing.TB, dport uint16) []byte {
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: lan1Host, DstIP: lan2Host}
	udp := &layers.UDP{SrcPort: 1024, DstPort: layers.UDPPort(dport)}
	udp.SetNetworkLayerForChecksum(ip)
	return serialize(tb, &layers.Ethernet{DstMAC: macR1, SrcMAC: macLANHost, EthernetType: layers.EthernetTypeIPv4},
		ip, udp, gopacket.Payload(make([]byte, 64-14-20-8)))
}

// The generator writes its template whatever the page held before, and
// walks the source port through the flows.
func TestGenerator(t *testing.T) {
	objs := loadBench(t, 3)
	tmpl := benchFrame(t, 9)
	must(t, objs.FrameTemplate.Set(tmpl))
	stale := make([]byte, 64) // a recycled page with someone else's bytes
	for i, wantPort := range []uint16{1025, 1026, 1024, 1025} {
		verdict, out := run(t, objs.GenXdp, stale, nil)
		if verdict != xdpTX {
			t.Fatalf("run %d: verdict %d, want XDP_TX", i, verdict)
		}
		if got := binary.BigEndian.Uint16(out[34:]); got != wantPort {
			t.Errorf("run %d: source port %d, want %d", i, got, wantPort)
		}
		want := append([]byte(nil), tmpl...)
		binary.BigEndian.PutUint16(want[34:], wantPort)
		want[40], want[41] = 0, 0 // UDP checksum left out
		if d := diff(out, want); d != "" {
			t.Errorf("run %d:%s", i, d)
		}
	}
}

func TestSink(t *testing.T) {
	objs := loadBench(t, 1)
	for _, c := range []struct {
		port    uint16
		verdict uint32
		counted uint64
	}{{9, xdpDrop, 1}, {53, xdpPass, 0}} {
		var before, after []uint64
		must(t, objs.SinkPackets.Lookup(uint32(0), &before))
		verdict, _ := run(t, objs.SinkXdp, benchFrame(t, c.port), nil)
		must(t, objs.SinkPackets.Lookup(uint32(0), &after))
		var n uint64
		for i := range after {
			n += after[i] - before[i]
		}
		if verdict != c.verdict || n != c.counted {
			t.Errorf("port %d: verdict %d counted %d, want %d and %d", c.port, verdict, n, c.verdict, c.counted)
		}
	}
}

// Plain XDP forwarding: the baseline the fast path is held to.
func TestForward(t *testing.T) {
	wanNS(t, true)
	lan := lanSide(t, true)
	objs := loadBench(t, 1)
	inner := innerPacket(t, lan2Host, lan1Host, 0, 64)
	in := frame(t, macR1, macWAN, inner)
	verdict, out := run(t, objs.FwdXdp, in, xdpContext{DataEnd: uint32(len(in)), IngressIfindex: uint32(lan)})
	if verdict != xdpRedirect {
		t.Fatalf("verdict %d, want XDP_REDIRECT", verdict)
	}
	if d := diff(out, frame(t, macLANHost, macWAN, withTTL(t, inner, 63))); d != "" {
		t.Errorf("forwarded frame:%s", d)
	}
}
