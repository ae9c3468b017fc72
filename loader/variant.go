package loader

import (
	"strconv"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
)

// buildVariant, when set at link time (-ldflags "-X
// github.com/grebpf/grebpf/loader.buildVariant=N"), makes this a second
// build of the data plane: every program starts with a dead "r0 = N", so
// its instructions and tag differ from the plain build's while it does
// the same. The hot-upgrade test swaps the two under traffic.
var buildVariant string

func applyVariant(spec *ebpf.CollectionSpec) {
	n, err := strconv.Atoi(buildVariant)
	if err != nil || n == 0 {
		return
	}
	for _, p := range spec.Programs {
		first := p.Instructions[0]
		mov := asm.Mov.Imm(asm.R0, int32(n)).WithSymbol(first.Symbol()).WithSource(first.Source())
		mov = btf.WithFuncMetadata(mov, btf.FuncMetadata(&first))
		first = btf.WithFuncMetadata(first.WithSymbol("").WithSource(nil), nil)
		p.Instructions = append(asm.Instructions{mov, first}, p.Instructions[1:]...)
	}
}
