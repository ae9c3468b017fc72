package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/grebpf/grebpf/internal/bench"
	"github.com/grebpf/grebpf/internal/tunnel"
)

func runBench(g *globals, args []string) error {
	fs := newFlags(g, "bench", "bench [--rounds 3] [--duration 5s] [--flows 1024] [--tcp 3s] [--routes N] [--rp-filter strict|loose|off] [--mode NAME,…] [--prog-stats] [--json]")
	var o bench.Options
	fs.IntVar(&o.Rounds, "rounds", 3, "measure each mode this many times, modes taking turns, and report medians")
	fs.DurationVar(&o.Duration, "duration", 5*time.Second, "generator time per mode and round")
	fs.IntVar(&o.Flows, "flows", 1024, "UDP flows (distinct source ports), 1..65535")
	fs.DurationVar(&o.TCP, "tcp", 3*time.Second, "iperf3 TCP time per mode; 0 skips it")
	fs.IntVar(&o.Routes, "routes", 0, "extra /32 routes in each grebpf router's tunnel (scale test)")
	fs.StringVar(&o.RPFilter, "rp-filter", "", "the tunnels' inner source check (grebpf's, ip_gre's rp_filter): strict (default), loose or off")
	fs.BoolVar(&o.ProgStats, "prog-stats", false, "report each BPF program's cost per run (kernel run-time statistics; lowers pps)")
	only := fs.String("mode", "", "only these modes, comma-separated: generator, routing, xdp-forward, grebpf-tc-xdp, grebpf-tc-tc, grebpf-tc-egress, grebpf-fastpath, ip_gre")
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	if err := parse(fs, args); err != nil {
		return err
	}
	if o.Rounds < 1 {
		return fmt.Errorf("rounds %d: use 1 or more", o.Rounds)
	}
	if o.Flows < 1 || o.Flows > 65535 {
		return fmt.Errorf("flows %d: use 1..65535", o.Flows)
	}
	if o.RPFilter != "" {
		if _, err := tunnel.ParseRPFilter(o.RPFilter); err != nil {
			return err
		}
	}
	if *only != "" {
		o.Only = strings.Split(*only, ",")
	}
	if g.netns != "" {
		return fmt.Errorf("bench builds its own lab: drop --netns")
	}
	progress := func(s string) { fmt.Fprintf(g.err, "grebpf bench: %s\n", s) }
	results, err := bench.Run(o, progress)
	if err != nil {
		return err
	}
	if *asJSON {
		return g.printJSON(results)
	}
	w := tabwriter.NewWriter(g.out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "MODE\tPPS (median)\tLOSS\tRATIO\tTCP (median)\tPPS EACH ROUND\n")
	for _, r := range results {
		if r.Unavailable != "" {
			fmt.Fprintf(w, "%s\t-\t-\t-\t-\t- (%s)\n", r.Mode, r.Unavailable)
			continue
		}
		tcp := "-"
		if r.TCPGbps > 0 {
			tcp = fmt.Sprintf("%.2f Gbit/s", r.TCPGbps)
		}
		ratio := "- (reference not run)"
		if r.Ratio > 0 {
			ratio = fmt.Sprintf("%.2f× %s", r.Ratio, r.Reference)
		}
		each := make([]string, len(r.RoundsPPS))
		for i, p := range r.RoundsPPS {
			each[i] = fmt.Sprintf("%.0f", p)
		}
		fmt.Fprintf(w, "%s\t%.0f\t%.1f%%\t%s\t%s\t%s\n", r.Mode, r.PPS, 100*max(r.Loss, 0), ratio, tcp, strings.Join(each, " "))
	}
	if !o.ProgStats {
		return w.Flush()
	}
	fmt.Fprintf(w, "\nMODE\tPROGRAM\tRUNS\tNS/RUN\t\t\n")
	for _, r := range results {
		for _, c := range r.Programs {
			fmt.Fprintf(w, "%s\t%s\t%d\t%.0f\t\t\n", r.Mode, c.Name, c.Runs, c.NsPerRun)
		}
	}
	return w.Flush()
}
