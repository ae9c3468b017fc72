package bpf_test

import (
	"encoding/binary"
	"runtime"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/grebpf/grebpf/internal/tunnel"
)

// replayRepeat is how many runs one BPF_PROG_TEST_RUN times: enough that
// the syscall and the clock reads vanish from the per-packet figure.
const replayRepeat = 1024

// replayFailed is the verdict of replay_xdp and replay_tc when they could
// not restore the packet or reach the program measured.
const replayFailed = 0xfe

// testRunAttr is bpf_attr's BPF_PROG_TEST_RUN member. RunOptions in
// cilium/ebpf does not return the kernel's duration.
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

// timedRun runs prog repeat times on data and returns the last verdict and
// the kernel's mean time per run in ns.
func timedRun(tb testing.TB, prog *ebpf.Program, data, ctx []byte, repeat uint32) (verdict, ns uint32) {
	out := make([]byte, len(data)+256)
	attr := testRunAttr{
		progFD: uint32(prog.FD()), dataSizeIn: uint32(len(data)), dataSizeOut: uint32(len(out)),
		dataIn: uint64(uintptr(unsafe.Pointer(&data[0]))), dataOut: uint64(uintptr(unsafe.Pointer(&out[0]))), repeat: repeat,
	}
	if ctx != nil {
		attr.ctxSizeIn = uint32(len(ctx))
		attr.ctxIn = uint64(uintptr(unsafe.Pointer(&ctx[0])))
	}
	var errno unix.Errno
	// Go preempts threads with signals, and a long run ends at a signal.
	for errno = unix.EINTR; errno == unix.EINTR; {
		_, _, errno = unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_TEST_RUN, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	}
	runtime.KeepAlive(data)
	runtime.KeepAlive(out)
	runtime.KeepAlive(ctx)
	if errno != 0 {
		tb.Fatalf("BPF_PROG_TEST_RUN: %v", errno)
	}
	return attr.retval, attr.duration
}

// noop returns only ret: the replay's own cost is measured through it. A
// program array takes only programs of its owner's type and attach type.
// That is SEC("xdp")'s BPF_XDP, or none for SEC("tc").
func noop(tb testing.TB, typ ebpf.ProgramType, ret int32) *ebpf.Program {
	tb.Helper()
	attach := ebpf.AttachNone
	if typ == ebpf.XDP {
		attach = ebpf.AttachXDP
	}
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: typ, AttachType: attach, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, ret), asm.Return()}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

// benchProgram times prog on pkt against a no-op program timed the same
// way, alternating so both see the same machine; ns/op is the difference,
// prog's own cost per packet.
//
// Warm, as a busy device runs it: each op is replayRepeat runs of replay
// (restore pkt, tail-call prog) in one BPF_PROG_TEST_RUN. Encap cannot be
// replayed: bpf_skb_adjust_room refuses to encapsulate an skb twice and no
// helper clears the mark, so a fresh skb per run (oneShot) is the only way;
// that figure includes the caches a syscall leaves cold.
func benchProgram(b *testing.B, prog *ebpf.Program, verdict uint32, pkt []byte, ctx any, oneShot bool) {
	var ctxBytes []byte
	if ctx != nil {
		var err error
		ctxBytes, err = binary.Append(nil, binary.NativeEndian, ctx)
		must(b, err)
	}
	empty := noop(b, prog.Type(), int32(verdict))
	timeProg, timeEmpty := replayer(b, prog, pkt, ctxBytes, oneShot), replayer(b, empty, pkt, ctxBytes, oneShot)

	var progNS, emptyNS uint64
	n := 0
	for b.Loop() {
		for _, p := range []struct {
			timed func() (uint32, uint32)
			sum   *uint64
		}{{timeProg, &progNS}, {timeEmpty, &emptyNS}} {
			v, ns := p.timed()
			if v != verdict {
				b.Fatalf("verdict %d, want %d: the benchmark would not measure what it names", v, verdict)
			}
			*p.sum += uint64(ns)
		}
		n++
	}
	withProg, without := float64(progNS)/float64(n), float64(emptyNS)/float64(n)
	b.ReportMetric(withProg-without, "ns/op")
	b.ReportMetric(withProg, "with-prog-ns/pkt")
	b.ReportMetric(without, "with-noop-ns/pkt")
}

// replayer returns a function that times prog on pkt once, or replayed
// replayRepeat times. Each replayed program gets its own replay program:
// changing a program array entry patches the caller's code, which is slow.
func replayer(b *testing.B, prog *ebpf.Program, pkt, ctx []byte, oneShot bool) func() (uint32, uint32) {
	if oneShot {
		return func() (uint32, uint32) { return timedRun(b, prog, pkt, ctx, 1) }
	}
	bench := loadBench(b, 1)
	replay, target := bench.ReplayXdp, bench.ReplayXdpTarget
	if prog.Type() == ebpf.SchedCLS {
		replay, target = bench.ReplayTc, bench.ReplayTcTarget
	}
	frame := make([]byte, 256)
	copy(frame, pkt)
	must(b, bench.ReplayFrame.Set(frame))
	must(b, bench.ReplayLen.Set(uint32(len(pkt))))
	must(b, target.Put(uint32(0), prog))
	return func() (uint32, uint32) { return timedRun(b, replay, pkt, ctx, replayRepeat) }
}

func BenchmarkEncap(b *testing.B) {
	for _, c := range []struct {
		name string
		key  *uint32
	}{{"plain", nil}, {"keyed", u32(testKey)}} {
		b.Run(c.name, func(b *testing.B) {
			link := tunnelDevs(b, wanNS(b, true))
			objs := loadOn(b, testTunnel(c.key, link, tunnel.RPStrict))
			in := frame(b, macTun, macTun, innerPacket(b, lan1Host, lan2Host, 0, 63))
			benchProgram(b, objs.EncapTc, tcRedirect, in, skbContext{Ifindex: link.PeerIfindex}, true)
		})
	}
}

// BenchmarkDecap's "no-source-check" cases price the inner source check,
// a FIB lookup, by leaving it out (--rp-filter off).
func BenchmarkDecap(b *testing.B) {
	inner := innerPacket(b, lan2Host, lan1Host, 0, 63)
	for _, c := range []struct {
		name string
		key  *uint32
		rp   tunnel.RPFilter
	}{{"plain", nil, tunnel.RPStrict}, {"keyed", u32(testKey), tunnel.RPStrict}, {"no-source-check", nil, tunnel.RPOff}} {
		in := greFrame(b, wanRemote, wanLocal, plainGRE(), inner)
		if c.key != nil {
			in = greFrame(b, wanRemote, wanLocal, keyedGRE(*c.key), inner)
		}
		for _, name := range []string{"xdp", "tc"} {
			b.Run(name+"/"+c.name, func(b *testing.B) {
				// The default inner source check (strict) looks up the FIB
				// of the thread's namespace: a router with the tunnel's
				// interface, made on the sub-benchmark's own thread.
				objs := loadOn(b, testTunnel(c.key, tunnelDevs(b, wanNS(b, true)), c.rp))
				for _, p := range decapProgs(objs) {
					if p.name == name {
						benchProgram(b, p.prog, p.delivered, in, nil, false)
					}
				}
			})
		}
	}
}

// The fast path on its own: no stack behind it, so these are the whole
// per-packet cost of a tunnel endpoint, short of the driver. The WAN
// side's "no-source-check" case prices the inner source check, a FIB
// lookup as dear as plain forwarding's own, by leaving it out.
func BenchmarkFastpath(b *testing.B) {
	b.Run("lan", func(b *testing.B) {
		wan := wanNS(b, true)
		lan := lanSide(b, true)
		objs := loadOn(b, testTunnel(nil, tunnelDevs(b, wan), tunnel.RPStrict))
		in := frame(b, macWAN, macLANHost, innerPacket(b, lan1Host, lan2Host, 0, 64))
		benchProgram(b, objs.FastpathLan, xdpRedirect, in, xdpContext{DataEnd: uint32(len(in)), IngressIfindex: uint32(lan)}, false)
	})
	for _, c := range []struct {
		name string
		rp   tunnel.RPFilter
	}{{"wan", tunnel.RPStrict}, {"wan/no-source-check", tunnel.RPOff}} {
		b.Run(c.name, func(b *testing.B) {
			wan := wanNS(b, true)
			lanSide(b, true)
			objs := loadOn(b, testTunnel(nil, tunnelDevs(b, wan), c.rp))
			in := greFrame(b, wanRemote, wanLocal, plainGRE(), innerPacket(b, lan2Host, lan1Host, 0, 63))
			benchProgram(b, objs.FastpathWan, xdpRedirect, in, xdpContext{DataEnd: uint32(len(in)), IngressIfindex: uint32(wan)}, false)
		})
	}
}

// Plain XDP forwarding, the fast path's ceiling in grebpf bench: the
// lookup and redirect both fast path programs also do, without the tunnel.
func BenchmarkForward(b *testing.B) {
	wanNS(b, true)
	lan := lanSide(b, true)
	bench := loadBench(b, 1)
	in := frame(b, macWAN, macLANHost, innerPacket(b, lan1Host, lan2Host, 0, 64))
	benchProgram(b, bench.FwdXdp, xdpRedirect, in, xdpContext{DataEnd: uint32(len(in)), IngressIfindex: uint32(lan)}, false)
}
