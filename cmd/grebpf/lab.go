package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/grebpf/grebpf/internal/lab"
)

// labShape adds --sites, --topology and --wan to fs.
func labShape(cmd *cobra.Command) *lab.Lab {
	l := lab.Default
	fs := cmd.Flags()
	fs.IntVar(&l.Sites, "sites", l.Sites, fmt.Sprintf("number of sites, 2..%d (site k ≥ 3: lanK 172.16.(147+k).0/24 behind rK at 10.(147+k).0.1)", lab.MaxSites))
	fs.StringVar(&l.Topology, "topology", l.Topology, "mesh (a tunnel between every pair of sites) or hub (r1 is the hub; spokes reach each other through it)")
	fs.StringVar(&l.WAN, "wan", lab.WANIPv4, "the WAN's family: ipv4 (GRE over IPv4, as ip_gre) or ipv6 (r1 2001:db8:ffff:100::1, r2 2001:db8:ffff:200::1; GRE over IPv6, as ip6gre)")
	completeWords(cmd, "topology", "mesh", "hub")
	completeWords(cmd, "wan", lab.WANIPv4, lab.WANIPv6)
	return &l
}

func labCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "The built-in site-to-site lab: network namespaces and veths",
		Long: `lab builds the site-to-site example in network namespaces: LANs
172.16.100.0/24 and 172.16.200.0/24 behind routers r1 and r2, whose WAN
addresses sit on either side of a WAN router, with or without tunnels.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return fmt.Errorf("lab: say up, down or config (grebpf lab --help)")
		},
	}
	up := &cobra.Command{
		Use:   "up",
		Short: "Build the lab, with tunnels of a kind between its sites",
	}
	l := labShape(up)
	var tunnel string
	var fastPath bool
	up.Flags().StringVar(&tunnel, "tunnel", lab.TunnelNone, "tunnels between the sites: none, bpf (grebpf) or kernel (ip_gre)")
	up.Flags().BoolVar(&fastPath, "fastpath", false, "prepare the veths for the XDP fast path (GRO on redirect targets' peers, no partial checksums from hosts); a bpf tunnel uses it")
	completeWords(up, "tunnel", lab.TunnelNone, lab.TunnelBPF, lab.TunnelKernel)
	up.RunE = func(*cobra.Command, []string) error {
		if err := l.Up(tunnel, fastPath); err != nil {
			return err
		}
		fmt.Fprintf(g.out, "grebpf: lab up (%s): %s\n", tunnel, l)
		return nil
	}
	down := &cobra.Command{
		Use:   "down",
		Short: "Remove the lab's namespaces",
		RunE: func(*cobra.Command, []string) error {
			if err := lab.Down(); err != nil {
				return err
			}
			fmt.Fprintln(g.out, "grebpf: lab down")
			return nil
		},
	}
	config := &cobra.Command{
		Use:   "config",
		Short: "Print the lab's routers as one YAML file for attach --config and run --config",
	}
	lc := labShape(config)
	config.RunE = func(*cobra.Command, []string) error {
		if err := lc.Check(); err != nil {
			return err
		}
		b, err := yaml.Marshal(lc.Config())
		if err != nil {
			return err
		}
		fmt.Fprintf(g.out, "# grebpf lab, %d sites, %s, %s WAN: grebpf --netns rK attach --config FILE --site rK\n%s", lc.Sites, lc.Topology, lc.WAN, b)
		return nil
	}
	rootCommand(up, false)
	rootCommand(down, false)
	config.Args = cobra.NoArgs // prints only: no root needed
	cmd.AddCommand(up, down, config)
	return cmd
}
