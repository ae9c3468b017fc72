package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/grebpf/grebpf/internal/bench"
	"github.com/grebpf/grebpf/internal/testutil"
)

// A short bench on the real lab: every mode asked for is measured in every
// round, its figures are one round's, counters add up (the kernel's run
// counts of the generator, the sink and the fast path against the bench's
// own), and TCP gets through (it measured 0.00 Gbit/s while XDP redirects
// lost partial checksums).
func TestBench(t *testing.T) {
	testutil.NeedRoot(t)
	var out strings.Builder
	err := run([]string{"bench", "--mode", "generator,routing,grebpf-fastpath", "--rounds", "2",
		"--duration", "1s", "--tcp", "1s", "--flows", "64", "--prog-stats", "--json"}, &out)
	if err != nil {
		t.Fatal(err)
	}
	var results []bench.Result
	if err := json.Unmarshal([]byte(out.String()), &results); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	var modes []string
	for _, r := range results {
		modes = append(modes, r.Mode)
		if len(r.RoundsPPS) != 2 || !slices.Contains(r.RoundsPPS, r.PPS) {
			t.Errorf("%s: pps %.0f, rounds %v: want one of 2 rounds", r.Mode, r.PPS, r.RoundsPPS)
		}
		if r.Delivered == 0 || r.Delivered > r.Generated {
			t.Errorf("%s: delivered %d of %d generated", r.Mode, r.Delivered, r.Generated)
		}
		if r.Reference != "routing" {
			t.Errorf("%s: reference %q, want routing (ip_gre was not run)", r.Mode, r.Reference)
		}
		runs := map[string]uint64{}
		for _, c := range r.Programs {
			runs[c.Name] = c.Runs
			if c.NsPerRun <= 0 {
				t.Errorf("%s: %s costs %v ns per run", r.Mode, c.Name, c.NsPerRun)
			}
		}
		if runs["gen_xdp"] != r.Generated || runs["sink_xdp"] < r.Delivered {
			t.Errorf("%s: gen_xdp ran %d times for %d generated, sink_xdp %d for %d delivered",
				r.Mode, runs["gen_xdp"], r.Generated, runs["sink_xdp"], r.Delivered)
		}
		if r.Mode == "grebpf-fastpath" && (runs["fastpath_lan"] < r.Delivered || runs["fastpath_wan"] < r.Delivered) {
			t.Errorf("fast path: fastpath_lan ran %d times, fastpath_wan %d, for %d delivered",
				runs["fastpath_lan"], runs["fastpath_wan"], r.Delivered)
		}
		if r.Mode != "generator" && (len(r.RoundsTCP) != 2 || r.TCPGbps < 0.01) {
			t.Errorf("%s: TCP %.3f Gbit/s, rounds %v: TCP does not get through", r.Mode, r.TCPGbps, r.RoundsTCP)
		}
	}
	if !slices.Equal(modes, []string{"generator", "routing", "grebpf-fastpath"}) {
		t.Errorf("modes %v", modes)
	}
	if results[1].Ratio != 1 {
		t.Errorf("routing's ratio to itself is %v", results[1].Ratio)
	}
}
