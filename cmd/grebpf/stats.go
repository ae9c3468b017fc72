package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

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

func runStats(g *globals, args []string) error {
	fs := newFlags(g, "stats", "stats [--json] [--tunnel NAME] [--all]")
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	only := fs.String("tunnel", "", "only this tunnel")
	all := fs.Bool("all", false, "list reasons that never happened too")
	if err := parse(fs, args); err != nil {
		return err
	}
	st, err := g.state()
	if err != nil {
		return err
	}
	ns := st.Netns
	out := statsOut{Netns: ns, Tunnels: []statsTunnel{}, Reasons: []statsReason{}}
	var names []string
	for _, t := range st.Tunnels {
		names = append(names, t.Name)
		if *only != "" && t.Name != *only {
			continue
		}
		out.Tunnels = append(out.Tunnels, statsTunnel{t.Name, t.Link.Ifindex, t.Local.String(), t.Remote.String(), t.Counters, pathMTUOf(t)})
	}
	if *only != "" && len(out.Tunnels) == 0 {
		return fmt.Errorf("no tunnel named %q in %s: have %s", *only, ns, strings.Join(names, ", "))
	}
	for r := maps.Reason(1); int(r) < len(st.Reasons); r++ {
		if st.Reasons[r] == 0 && !*all && !*asJSON {
			continue
		}
		action := "pass"
		if maps.ReasonDrops(r) {
			action = "drop"
		}
		out.Reasons = append(out.Reasons, statsReason{maps.ReasonName(r), action, st.Reasons[r]})
	}
	if *asJSON {
		return g.printJSON(out)
	}
	w := tabwriter.NewWriter(g.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "TUNNEL\tLOCAL\tREMOTE\tRX-PACKETS\tRX-BYTES\tTX-PACKETS\tTX-BYTES\tPATH-MTU\t")
	for _, t := range out.Tunnels {
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t\n", t.Name, t.Local, t.Remote, t.RxPackets, t.RxBytes, t.TxPackets, t.TxBytes, t.pathMTU)
	}
	w.Flush()
	fmt.Fprintln(g.out)
	w = tabwriter.NewWriter(g.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "REASON\tACTION\tPACKETS")
	for _, r := range out.Reasons {
		fmt.Fprintf(w, "%s\t%s\t%d\n", r.Reason, r.Action, r.Packets)
	}
	if len(out.Reasons) == 0 {
		fmt.Fprintln(w, "(none)\t\t")
	}
	return w.Flush()
}
