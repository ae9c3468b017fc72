package main

import (
	"errors"
	"flag"
	"fmt"

	"go.yaml.in/yaml/v3"

	"github.com/grebpf/grebpf/internal/lab"
)

const labUsage = "lab up [--sites N] [--topology mesh|hub] [--wan ipv4|ipv6] [--tunnel none|bpf|kernel] [--fastpath] | lab down | lab config [--sites N] [--topology mesh|hub] [--wan ipv4|ipv6]"

// labShape adds --sites and --topology to fs.
func labShape(fs *flag.FlagSet) *lab.Lab {
	l := lab.Default
	fs.IntVar(&l.Sites, "sites", l.Sites, fmt.Sprintf("number of sites, 2..%d (site k ≥ 3: lanK 172.16.(147+k).0/24 behind rK at 10.(147+k).0.1)", lab.MaxSites))
	fs.StringVar(&l.Topology, "topology", l.Topology, "mesh (a tunnel between every pair of sites) or hub (r1 is the hub; spokes reach each other through it)")
	fs.StringVar(&l.WAN, "wan", lab.WANIPv4, "the WAN's family: ipv4 (GRE over IPv4, as ip_gre) or ipv6 (r1 2001:db8:ffff:100::1, r2 2001:db8:ffff:200::1; GRE over IPv6, as ip6gre)")
	return &l
}

func runLab(g *globals, args []string) error {
	if len(args) == 0 {
		return errors.New("lab: say up, down or config (grebpf " + labUsage + ")")
	}
	switch args[0] {
	case "up":
		fs := newFlags(g, "lab up", "lab up [--sites N] [--topology mesh|hub] [--wan ipv4|ipv6] [--tunnel none|bpf|kernel] [--fastpath]")
		l := labShape(fs)
		tunnel := fs.String("tunnel", lab.TunnelNone, "tunnels between the sites: none, bpf (grebpf) or kernel (ip_gre)")
		fastPath := fs.Bool("fastpath", false, "prepare the veths for the XDP fast path (GRO on redirect targets' peers, no partial checksums from hosts); a bpf tunnel uses it")
		if err := parse(fs, args[1:]); err != nil {
			return err
		}
		if err := l.Up(*tunnel, *fastPath); err != nil {
			return err
		}
		fmt.Fprintf(g.out, "grebpf: lab up (%s): %s\n", *tunnel, l)
		return nil
	case "down":
		if err := parse(newFlags(g, "lab down", "lab down"), args[1:]); err != nil {
			return err
		}
		if err := lab.Down(); err != nil {
			return err
		}
		fmt.Fprintln(g.out, "grebpf: lab down")
		return nil
	case "config":
		fs := newFlags(g, "lab config", "lab config [--sites N] [--topology mesh|hub] [--wan ipv4|ipv6]")
		l := labShape(fs)
		if err := parse(fs, args[1:]); err != nil {
			return err
		}
		if err := l.Check(); err != nil {
			return err
		}
		b, err := yaml.Marshal(l.Config())
		if err != nil {
			return err
		}
		fmt.Fprintf(g.out, "# grebpf lab, %d sites, %s, %s WAN: grebpf --netns rK attach --config FILE --site rK\n%s", l.Sites, l.Topology, l.WAN, b)
		return nil
	}
	return fmt.Errorf("lab: unknown action %q: use up, down or config", args[0])
}
