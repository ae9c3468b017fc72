package main

import (
	"errors"
	"fmt"

	"github.com/grebpf/grebpf/internal/lab"
)

func runLab(g *globals, args []string) error {
	if len(args) == 0 {
		return errors.New("lab: say up or down (grebpf lab up [--tunnel none|bpf|kernel])")
	}
	switch args[0] {
	case "up":
		fs := newFlags(g, "lab up", "lab up [--tunnel none|bpf|kernel] [--fastpath]")
		tunnel := fs.String("tunnel", lab.TunnelNone, "tunnel between r1 and r2: none, bpf (grebpf) or kernel (ip_gre)")
		fastPath := fs.Bool("fastpath", false, "prepare the veths for the XDP fast path (GRO on redirect targets' peers, no partial checksums from hosts); a bpf tunnel uses it")
		if err := parse(fs, args[1:]); err != nil {
			return err
		}
		if err := lab.Up(*tunnel, *fastPath); err != nil {
			return err
		}
		fmt.Fprintf(g.out, "grebpf: lab up (%s): lan1 172.16.100.1 - r1 - wan - r2 - lan2 172.16.200.1\n", *tunnel)
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
	}
	return fmt.Errorf("lab: unknown action %q: use up or down", args[0])
}
