package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/cilium/ebpf"
)

// ProgramRuns is what the kernel counts of one program's runs while its
// run-time statistics are on (kernel.bpf_stats_enabled, or a holder of
// BPF_ENABLE_STATS such as grebpf run --prog-stats).
type ProgramRuns struct {
	Runs    uint64
	Runtime time.Duration
}

// ProgramStats sums, by program name, the statistics of the programs of
// ns's data plane: those that use one of its pinned maps, whatever
// attached them (links, cls_bpf filters, the fast path's XDP).
func ProgramStats(ns string) (map[string]ProgramRuns, error) {
	pins, err := os.ReadDir(Dir(ns))
	if err != nil {
		return nil, fmt.Errorf("read the pins of %s: %w", ns, err)
	}
	ours := map[ebpf.MapID]bool{}
	for _, pin := range pins {
		m, err := ebpf.LoadPinnedMap(filepath.Join(Dir(ns), pin.Name()), &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			continue // a link
		}
		info, err := m.Info()
		m.Close()
		if err != nil {
			return nil, err
		}
		if id, ok := info.ID(); ok {
			ours[id] = true
		}
	}
	if len(ours) == 0 {
		return nil, fmt.Errorf("no map IDs for the data plane of %s", ns)
	}
	return SumProgramRuns(func(info *ebpf.ProgramInfo) bool {
		maps, ok := info.MapIDs()
		return ok && slices.ContainsFunc(maps, func(id ebpf.MapID) bool { return ours[id] })
	})
}

// SumProgramRuns sums, by name, the run statistics of every loaded
// program keep takes.
func SumProgramRuns(keep func(*ebpf.ProgramInfo) bool) (map[string]ProgramRuns, error) {
	out := map[string]ProgramRuns{}
	var id ebpf.ProgramID
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list BPF programs: %w", err)
		}
		id = next
		prog, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // gone since listed
		}
		info, ierr := prog.Info()
		stats, serr := prog.Stats()
		prog.Close()
		if ierr != nil || serr != nil || !keep(info) {
			continue
		}
		r := out[info.Name]
		r.Runs += stats.RunCount
		r.Runtime += stats.Runtime
		out[info.Name] = r
	}
}

// StatsEnabled says whether kernel.bpf_stats_enabled is on (it does not
// show BPF_ENABLE_STATS holders, which count runs too).
func StatsEnabled() bool {
	b, err := os.ReadFile("/proc/sys/kernel/bpf_stats_enabled")
	return err == nil && len(b) > 0 && b[0] != '0'
}
