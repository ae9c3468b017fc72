package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/grebpf/grebpf/internal/config"
	"github.com/grebpf/grebpf/loader"
)

func detachCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "detach",
		Short: "Remove everything attach set up",
		Long: `detach removes the programs, pins, tunnel interfaces, addresses and routes
attach set up in the namespace, and puts back what attach changed (GRO on
the WAN device). With nothing attached, it says so and succeeds.`,
		RunE: func(*cobra.Command, []string) error { return detach(g) },
	}
	cmd.Flags().DurationVar(&loader.LockWait, "wait", loader.LockWait, "how long to wait while another grebpf attaches or detaches in the namespace")
	return rootCommand(cmd, true)
}

func detach(g *globals) error {
	ns, err := g.nsName()
	if err != nil {
		return err
	}
	mode, err := loader.DetachWith(ns)
	if errors.Is(err, loader.ErrNotAttached) {
		// Detach is idempotent: nothing there is the state asked for.
		fmt.Fprintf(g.out, "grebpf: nothing attached in %s\n", ns)
		return nil
	}
	if err != nil {
		return err
	}
	if mode == config.ModeKernel {
		fmt.Fprintf(g.out, "grebpf: detached ip_gre tunnels in %s\n", ns)
		return nil
	}
	fmt.Fprintf(g.out, "grebpf: detached in %s\n", ns)
	return nil
}
