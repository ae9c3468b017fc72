package loader

import (
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/grebpf/grebpf/bpf"
)

// probePacket is Ethernet + IPv4-in-IPv4: enough for adjust_room to strip
// one IPv4 header.
var probePacket = func() []byte {
	b := make([]byte, 14+20+20+8)
	b[12], b[13] = 0x08, 0x00
	for _, off := range []int{14, 34} {
		b[off] = 0x45
		b[off+3] = byte(len(b) - off)
		b[off+8] = 64
	}
	b[14+9] = 4 // IPPROTO_IPIP
	b[34+9] = 17
	return b
}()

// HaveDecapL3 says whether bpf_skb_adjust_room knows
// BPF_F_ADJ_ROOM_DECAP_L3_IPV4, which TC decap needs to keep GSO packets
// valid. It runs the probe program rather than guessing from the version.
func HaveDecapL3(probe *ebpf.Program) bool {
	ret, err := probe.Run(&ebpf.RunOptions{Data: probePacket})
	return err == nil && ret == 1
}

// ProbeDecapL3 loads only the probe program and runs it.
func ProbeDecapL3() (bool, error) {
	spec, err := bpf.LoadGrebpf()
	if err != nil {
		return false, err
	}
	prog, err := ebpf.NewProgram(spec.Programs[bpf.GrebpfProgProbeDecapL3])
	if err != nil {
		return false, err
	}
	defer prog.Close()
	return HaveDecapL3(prog), nil
}

// HaveTCX says whether the kernel attaches TC programs through tcx links
// (Linux 6.6+): it attaches a program that only says "next" to lo for a
// moment, which is what the kernel answers truthfully.
func HaveTCX() bool {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()}}) // TCX_NEXT
	if err != nil {
		return false
	}
	defer prog.Close()
	l, err := link.AttachTCX(link.TCXOptions{Interface: 1, Program: prog, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		return false
	}
	l.Close()
	return true
}
