package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/grebpf/grebpf/internal/bench"
	"github.com/grebpf/grebpf/internal/tunnel"
)

func benchCmd(g *globals) *cobra.Command {
	var (
		o                  bench.Options
		only, inner, outer string
		asJSON             bool
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Packets/s and TCP of each mode on the lab, against ip_gre or kernel routing",
		Long: `bench builds the lab once per mode, sends UDP from an XDP generator on lan1
to a sink on lan2 through r1, the WAN router and r2, and measures what
arrives, then TCP with iperf3. Modes take turns within each round and the
medians are reported, with each mode's ratio to ip_gre (or to routing).

With --rate the generator is paced at that many packets per second, below
what every mode carries, and bench reports the CPU time of the whole
machine per delivered packet; less the generator's own (measured too),
that is what the path costs, and its ratio compares modes by packets per
CPU second, which the generator sharing the CPUs does not blur.`,
		RunE: func(*cobra.Command, []string) error { return runBench(g, o, only, inner, outer, asJSON) },
	}
	fs := cmd.Flags()
	fs.IntVar(&o.Rounds, "rounds", 3, "measure each mode this many times, modes taking turns, and report medians")
	fs.DurationVar(&o.Duration, "duration", 5*time.Second, "generator time per mode and round")
	fs.IntVar(&o.Flows, "flows", 1024, "UDP flows (distinct source ports), 1..65535")
	fs.DurationVar(&o.TCP, "tcp", 3*time.Second, "iperf3 TCP time per mode; 0 skips it")
	fs.IntVar(&o.Routes, "routes", 0, "extra /32 routes in each grebpf router's tunnel (scale test)")
	fs.StringVar(&o.RPFilter, "rp-filter", "", "the tunnels' inner source check (grebpf's, ip_gre's rp_filter): strict (default), loose or off")
	fs.BoolVar(&o.ProgStats, "prog-stats", false, "report each BPF program's cost per run (kernel run-time statistics; lowers pps)")
	fs.StringVar(&only, "mode", "", "only these modes, comma-separated: "+strings.Join(bench.ModeNames(), ", "))
	fs.StringVar(&inner, "inner", "ipv4", "what the generator and iperf3 send through the tunnels: ipv4 or ipv6")
	fs.StringVar(&outer, "outer", "ipv4", "the lab's WAN, and the tunnels' outer header: ipv4 (GRE over IPv4, against ip_gre) or ipv6 (GRE over IPv6, against ip6gre)")
	fs.IntVar(&o.Rate, "rate", 0, "pace the generator at this many packets/s and report CPU time per packet (0: as fast as it can)")
	fs.BoolVar(&asJSON, "json", false, "print JSON for scripts")
	completeWords(cmd, "mode", bench.ModeNames()...)
	completeWords(cmd, "inner", "ipv4", "ipv6")
	completeWords(cmd, "outer", "ipv4", "ipv6")
	completeWords(cmd, "rp-filter", "strict", "loose", "off")
	return rootCommand(cmd, false)
}

func runBench(g *globals, o bench.Options, only, inner, outer string, asJSON bool) error {
	switch inner {
	case "ipv4":
	case "ipv6":
		o.IPv6 = true
	default:
		return fmt.Errorf("inner %q: use ipv4 or ipv6", inner)
	}
	switch outer {
	case "ipv4":
	case "ipv6":
		o.OuterIPv6 = true
	default:
		return fmt.Errorf("outer %q: use ipv4 or ipv6", outer)
	}
	if o.Rounds < 1 {
		return fmt.Errorf("rounds %d: use 1 or more", o.Rounds)
	}
	if o.Rate < 0 {
		return fmt.Errorf("rate %d: use 0 (as fast as the generator can) or a rate in packets/s", o.Rate)
	}
	if o.Flows < 1 || o.Flows > 65535 {
		return fmt.Errorf("flows %d: use 1..65535", o.Flows)
	}
	if o.RPFilter != "" {
		if _, err := tunnel.ParseRPFilter(o.RPFilter); err != nil {
			return err
		}
	}
	if only != "" {
		o.Only = strings.Split(only, ",")
	}
	progress := func(s string) { fmt.Fprintf(g.err, "grebpf bench: %s\n", s) }
	results, err := bench.Run(o, progress)
	if err != nil {
		return err
	}
	if asJSON {
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
		fmt.Fprintf(w, "%s\t%.0f\t%.1f%%\t%s\t%s\t%s\n", r.Mode, r.PPS, 100*max(r.Loss, 0), ratio, tcp, rounds(r.RoundsPPS))
	}
	if o.Rate > 0 {
		fmt.Fprintf(w, "\nMODE\tCPU NS/PACKET (median)\tPATH NS/PACKET\tPATH RATIO\tCPU NS EACH ROUND\t\n")
		for _, r := range results {
			if r.Unavailable != "" {
				continue
			}
			path, ratio := "-", "-"
			if r.PathNs > 0 {
				path = fmt.Sprintf("%.0f", r.PathNs)
			}
			if r.PathRatio > 0 {
				ratio = fmt.Sprintf("%.2f× %s", r.PathRatio, r.Reference)
			}
			fmt.Fprintf(w, "%s\t%.0f\t%s\t%s\t%s\t\n", r.Mode, r.CPUNs, path, ratio, rounds(r.RoundsCPUNs))
		}
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

// rounds is one figure per round, whole numbers, in order.
func rounds(vs []float64) string {
	each := make([]string, len(vs))
	for i, v := range vs {
		each[i] = fmt.Sprintf("%.0f", v)
	}
	return strings.Join(each, " ")
}
