package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/grebpf/grebpf/internal/tunnel"
	"github.com/grebpf/grebpf/maps"
)

type statsTunnel struct {
	Name    string `json:"name"`
	Ifindex uint32 `json:"ifindex"`
	Local   string `json:"local"`
	Remote  string `json:"remote"`
	tunnel.Counters
	pathMTU
	Health string `json:"health"`
}

type statsReason struct {
	Reason  string `json:"reason"`
	Action  string `json:"action"`
	Packets uint64 `json:"packets"`
}

type statsOut struct {
	Netns   string        `json:"netns"`
	Tunnels []statsTunnel `json:"tunnels"`
	Reasons []statsReason `json:"reasons"`
}

type statsOptions struct {
	asJSON   bool
	only     string
	all      bool
	watch    bool
	interval time.Duration
	count    int
}

func statsCmd(g *globals) *cobra.Command {
	var o statsOptions
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Per-tunnel traffic and per-reason drop and pass counters",
		Long: `stats prints each tunnel's packets and bytes received and sent by the
data plane, its path MTU, and how many packets each reason dropped or
passed to the kernel. With --watch it redraws a table of rates (packets/s,
bits/s) every interval; piped, it prints one table per interval.`,
		RunE: func(*cobra.Command, []string) error {
			if o.watch {
				return watchStats(g, o)
			}
			out, err := readStats(g, o)
			if err != nil {
				return err
			}
			if o.asJSON {
				return g.printJSON(out)
			}
			return printStats(g.out, out)
		},
	}
	fs := cmd.Flags()
	fs.BoolVar(&o.asJSON, "json", false, "print JSON for scripts")
	fs.StringVar(&o.only, "tunnel", "", "only this tunnel")
	fs.BoolVar(&o.all, "all", false, "list reasons that never happened too")
	fs.BoolVar(&o.watch, "watch", false, "a live table of rates, redrawn every --interval")
	fs.DurationVar(&o.interval, "interval", time.Second, "with --watch: time between tables")
	fs.IntVar(&o.count, "count", 0, "with --watch: stop after this many tables (0: until interrupted)")
	return rootCommand(cmd, true)
}

func readStats(g *globals, o statsOptions) (statsOut, error) {
	st, err := g.state()
	if err != nil {
		return statsOut{}, err
	}
	ns := st.Netns
	out := statsOut{Netns: ns, Tunnels: []statsTunnel{}, Reasons: []statsReason{}}
	var names []string
	for _, t := range st.Tunnels {
		names = append(names, t.Name)
		if o.only != "" && t.Name != o.only {
			continue
		}
		out.Tunnels = append(out.Tunnels, statsTunnel{t.Name, t.Link.Ifindex, t.Local.String(), t.Remote.String(), t.Counters, pathMTUOf(t), t.Health})
	}
	if o.only != "" && len(out.Tunnels) == 0 {
		return out, fmt.Errorf("no tunnel named %q in %s: have %s", o.only, ns, strings.Join(names, ", "))
	}
	for r := maps.Reason(1); int(r) < len(st.Reasons); r++ {
		if st.Reasons[r] == 0 && !o.all && !o.asJSON && !o.watch {
			continue
		}
		out.Reasons = append(out.Reasons, statsReason{maps.ReasonName(r), reasonAction(r), st.Reasons[r]})
	}
	return out, nil
}

func reasonAction(r maps.Reason) string {
	if maps.ReasonDrops(r) {
		return "drop"
	}
	return "pass"
}

func printStats(w io.Writer, out statsOut) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TUNNEL\tLOCAL\tREMOTE\tRX-PACKETS\tRX-BYTES\tTX-PACKETS\tTX-BYTES\tPATH-MTU\tHEALTH\t")
	for _, t := range out.Tunnels {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t\n", t.Name, t.Local, t.Remote, t.RxPackets, t.RxBytes, t.TxPackets, t.TxBytes, t.pathMTU, orDash(t.Health))
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "REASON\tACTION\tPACKETS")
	for _, r := range out.Reasons {
		fmt.Fprintf(tw, "%s\t%s\t%d\n", r.Reason, r.Action, r.Packets)
	}
	if len(out.Reasons) == 0 {
		fmt.Fprintln(tw, "(none)\t\t")
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// watchStats prints a table of rates per interval: in place on a
// terminal, one after another when piped.
func watchStats(g *globals, o statsOptions) error {
	if o.interval < 10*time.Millisecond {
		return fmt.Errorf("stats: --interval %v: use 10ms or more", o.interval)
	}
	if o.asJSON {
		return fmt.Errorf("stats: --watch draws a table: drop --json (stats --json reads the counters once)")
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(stop)
	terminal := isTerminal(g.out)
	prev, err := readStats(g, o)
	if err != nil {
		return err
	}
	prevAt := time.Now()
	tick := time.NewTicker(o.interval)
	defer tick.Stop()
	for frame := 1; o.count == 0 || frame <= o.count; frame++ {
		select {
		case <-stop:
			return nil
		case <-tick.C:
		}
		now, err := readStats(g, o)
		if err != nil {
			return err
		}
		at := time.Now()
		var b strings.Builder
		if terminal {
			b.WriteString("\x1b[H\x1b[2J") // home, clear: the table redraws in place
		} else if frame > 1 {
			b.WriteString("\n")
		}
		writeRates(&b, prev, now, at.Sub(prevAt), at)
		if _, err := io.WriteString(g.out, b.String()); err != nil {
			return err
		}
		prev, prevAt = now, at
	}
	return nil
}

// writeRates writes the rates between two readings dt apart.
func writeRates(w io.Writer, prev, now statsOut, dt time.Duration, at time.Time) {
	secs := dt.Seconds()
	rate := func(a, b uint64) float64 {
		if b < a { // counters reset by a re-attach
			return 0
		}
		return float64(b-a) / secs
	}
	fmt.Fprintf(w, "grebpf stats in %s at %s, rates over %.1fs\n", now.Netns, at.Format("15:04:05"), secs)
	before := map[string]statsTunnel{}
	for _, t := range prev.Tunnels {
		before[t.Name] = t
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "TUNNEL\tRX PKT/S\tRX BIT/S\tTX PKT/S\tTX BIT/S\tPATH-MTU\tHEALTH\t")
	for _, t := range now.Tunnels {
		p := before[t.Name]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", t.Name,
			humanRate(rate(p.RxPackets, t.RxPackets)), humanRate(8*rate(p.RxBytes, t.RxBytes)),
			humanRate(rate(p.TxPackets, t.TxPackets)), humanRate(8*rate(p.TxBytes, t.TxBytes)),
			t.pathMTU, orDash(t.Health))
	}
	tw.Flush()
	fmt.Fprintln(w)
	was := map[string]uint64{}
	for _, r := range prev.Reasons {
		was[r.Reason] = r.Packets
	}
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "REASON\tACTION\tPKT/S\tTOTAL\t")
	shown := 0
	for _, r := range now.Reasons {
		if r.Packets == 0 {
			continue
		}
		shown++
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t\n", r.Reason, r.Action, humanRate(rate(was[r.Reason], r.Packets)), r.Packets)
	}
	if shown == 0 {
		fmt.Fprintln(tw, "(none)\t\t\t\t")
	}
	tw.Flush()
}

// humanRate writes a rate with an SI prefix: 0, 950, 1.23k, 45.6M.
func humanRate(v float64) string {
	switch {
	case v >= 1e9:
		return fmt.Sprintf("%.3gG", v/1e9)
	case v >= 1e6:
		return fmt.Sprintf("%.3gM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.3gk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
