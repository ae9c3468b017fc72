package main

import (
	"fmt"

	"github.com/grebpf/grebpf/internal/config"
	"github.com/grebpf/grebpf/loader"
)

func runDetach(g *globals, args []string) error {
	fs := newFlags(g, "detach", "detach")
	if err := parse(fs, args); err != nil {
		return err
	}
	ns, err := g.nsName()
	if err != nil {
		return err
	}
	b := loader.AttachedBackend(ns)
	if b == nil {
		// Detach is idempotent: nothing there is the state asked for.
		fmt.Fprintf(g.out, "grebpf: nothing attached in %s\n", ns)
		return nil
	}
	if err := b.Detach(ns); err != nil {
		return err
	}
	if b.Mode() == config.ModeKernel {
		fmt.Fprintf(g.out, "grebpf: detached ip_gre tunnels in %s\n", ns)
		return nil
	}
	fmt.Fprintf(g.out, "grebpf: detached in %s\n", ns)
	return nil
}
