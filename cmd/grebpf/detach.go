package main

import (
	"errors"
	"fmt"

	"github.com/grebpf/grebpf/internal/config"
	"github.com/grebpf/grebpf/loader"
)

func runDetach(g *globals, args []string) error {
	fs := newFlags(g, "detach", "detach [--wait 60s]")
	fs.DurationVar(&loader.LockWait, "wait", loader.LockWait, "how long to wait while another grebpf attaches or detaches in the namespace")
	if err := parse(fs, args); err != nil {
		return err
	}
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
