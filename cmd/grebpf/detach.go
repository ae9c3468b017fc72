package main

import (
	"errors"
	"fmt"

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
	if loader.KernelAttached() {
		if err := loader.DetachKernel(); err != nil {
			return err
		}
		fmt.Fprintf(g.out, "grebpf: detached ip_gre tunnels in %s\n", ns)
		return nil
	}
	err = loader.Detach(ns)
	if errors.Is(err, loader.ErrNotAttached) {
		// Detach is idempotent: nothing there is the state asked for.
		fmt.Fprintf(g.out, "grebpf: nothing attached in %s\n", ns)
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(g.out, "grebpf: detached in %s\n", ns)
	return nil
}
