package bench

import (
	"runtime"
	"testing"
	"time"
)

// busyCPU sees a goroutine's spinning: the busy time it adds is at least
// most of the spin and at most every CPU's whole wall time.
func TestBusyCPUCountsSpinning(t *testing.T) {
	const spin = 300 * time.Millisecond
	before, err := busyCPU()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for n := 0; time.Since(start) < spin; n++ {
	}
	wall := time.Since(start)
	after, err := busyCPU()
	if err != nil {
		t.Fatal(err)
	}
	busy := after - before
	// Idle time is read in 10 ms units, one rounding at each read.
	if busy < spin*2/3 || busy > wall*time.Duration(runtime.NumCPU())+20*time.Millisecond {
		t.Errorf("spinning %v: busy CPU time %v", wall, busy)
	}
}
