package bpf_test

import (
	"bytes"
	"testing"

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
	objs := load(f, nil)
	f.Fuzz(func(t *testing.T, in []byte) {
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
			ihl := int(in[14]&0x0f) * 4
			strip := ihl + 4
			if !bytes.Equal(in[14+12:14+20], append(wanRemote.AsSlice(), wanLocal.AsSlice()...)) {
				t.Fatalf("decapsulated a packet not from the configured peer: %x", in)
			}
			want := append(append(bytes.Clone(macTun), macTunPeer...), in[12:14]...)
			want = withMeta(fakeLink.Ifindex, append(want, in[14+strip:]...))
			if !bytes.Equal(out, want) {
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
	})
}
