package bpf_test

import (
	"encoding/binary"
	"runtime"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// testRunAttr is bpf_attr's BPF_PROG_TEST_RUN member.
type testRunAttr struct {
	progFD, retval          uint32
	dataSizeIn, dataSizeOut uint32
	dataIn, dataOut         uint64
	repeat, duration        uint32
	ctxSizeIn, ctxSizeOut   uint32
	ctxIn, ctxOut           uint64
	flags, cpu, batchSize   uint32
	_                       uint32
}

// timedRun runs prog once on a fresh copy of data and returns the kernel's
// own measure of the run in ns. One run per call on purpose: with repeat > 1
// the kernel reuses the packet, so a second decap would see the inner
// packet and a second encap the outer one.
func timedRun(tb testing.TB, prog *ebpf.Program, data, ctx []byte) uint32 {
	out := make([]byte, len(data)+256)
	attr := testRunAttr{
		progFD: uint32(prog.FD()), dataSizeIn: uint32(len(data)), dataSizeOut: uint32(len(out)),
		dataIn: uint64(uintptr(unsafe.Pointer(&data[0]))), dataOut: uint64(uintptr(unsafe.Pointer(&out[0]))), repeat: 1,
	}
	if ctx != nil {
		attr.ctxSizeIn = uint32(len(ctx))
		attr.ctxIn = uint64(uintptr(unsafe.Pointer(&ctx[0])))
	}
	_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_TEST_RUN, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(data)
	runtime.KeepAlive(out)
	runtime.KeepAlive(ctx)
	if errno != 0 {
		tb.Fatalf("BPF_PROG_TEST_RUN: %v", errno)
	}
	return attr.duration
}

// baseline returns only ret: what BPF_PROG_TEST_RUN and its clock cost by
// themselves, measured in the same run so each result is also a ratio.
func baseline(tb testing.TB, typ ebpf.ProgramType, ret int32) *ebpf.Program {
	tb.Helper()
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: typ, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, ret), asm.Return()}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

// benchProgram reports ns/pkt (kernel-timed), the baseline's ns/pkt and
// the program's cost over the baseline.
func benchProgram(b *testing.B, prog, base *ebpf.Program, data []byte, ctx any) {
	var ctxBytes []byte
	if ctx != nil {
		var err error
		if ctxBytes, err = binary.Append(nil, binary.NativeEndian, ctx); err != nil {
			b.Fatal(err)
		}
	}
	var progNS, baseNS uint64
	n := 0
	for b.Loop() {
		progNS += uint64(timedRun(b, prog, data, ctxBytes))
		baseNS += uint64(timedRun(b, base, data, ctxBytes))
		n++
	}
	p, bl := float64(progNS)/float64(n), float64(baseNS)/float64(n)
	b.ReportMetric(p, "ns/pkt")
	b.ReportMetric(bl, "baseline-ns/pkt")
	b.ReportMetric(p-bl, "net-ns/pkt")
	b.ReportMetric(p, "ns/op") // the wall time of an op is two syscalls: not the figure
}

func BenchmarkEncap(b *testing.B) {
	for _, c := range []struct {
		name string
		key  *uint32
	}{{"plain", nil}, {"keyed", u32(testKey)}} {
		b.Run(c.name, func(b *testing.B) {
			ctx := skbContext{Ifindex: uint32(wanNS(b, true))}
			objs := load(b, c.key)
			in := frame(b, macOverlay, macR1, innerPacket(b, lan1Host, lan2Host, 0, 63))
			if v, _ := run(b, objs.EncapTc, in, ctx); v != tcOK {
				b.Fatalf("verdict %d: the benchmark would not measure encap", v)
			}
			benchProgram(b, objs.EncapTc, baseline(b, ebpf.SchedCLS, tcOK), in, ctx)
		})
	}
}

func BenchmarkDecap(b *testing.B) {
	inner := innerPacket(b, lan2Host, lan1Host, 0, 63)
	for _, c := range []struct {
		name string
		key  *uint32
	}{{"plain", nil}, {"keyed", u32(testKey)}} {
		objs := load(b, c.key)
		in := greFrame(b, wanRemote, wanLocal, plainGRE(), inner)
		if c.key != nil {
			in = greFrame(b, wanRemote, wanLocal, keyedGRE(*c.key), inner)
		}
		for _, p := range decapProgs(objs) {
			b.Run(p.name+"/"+c.name, func(b *testing.B) {
				if v, out := run(b, p.prog, in, nil); v != p.pass || len(out) != 14+len(inner) {
					b.Fatalf("verdict %d: the benchmark would not measure decap", v)
				}
				typ, ret := ebpf.XDP, int32(xdpPass)
				if p.name == "tc" {
					typ, ret = ebpf.SchedCLS, tcOK
				}
				benchProgram(b, p.prog, baseline(b, typ, ret), in, nil)
			})
		}
	}
}
