package loader

import (
	"fmt"
	"slices"

	"github.com/grebpf/grebpf/internal/config"
	"github.com/grebpf/grebpf/internal/routing"
	"github.com/grebpf/grebpf/internal/tunnel"
)

// Backend is one way to realise a router's tunnels: grebpf's BPF programs
// on tunnel interfaces, or the kernel's ip_gre netdevs, the fallback and
// yardstick. Both take the same config and report the same state, so
// everything above them (attach, detach, show, stats, lab, bench) is
// written once.
//
// Attach and Detach run with the namespace's lock held: call them through
// AttachWith and DetachWith.
type Backend interface {
	Mode() string
	Attach(ns string, r config.Router) (Report, error)
	Detach(ns string) error
	State(ns string) (State, error)
	// Attached says whether this backend has tunnels in ns, which is the
	// current network namespace.
	Attached(ns string) bool
}

type bpfBackend struct{}

func (bpfBackend) Mode() string                                      { return config.ModeBPF }
func (bpfBackend) Attach(ns string, r config.Router) (Report, error) { return attachBPF(ns, r) }
func (bpfBackend) Detach(ns string) error                            { return detachBPF(ns) }
func (bpfBackend) State(ns string) (State, error)                    { return ReadState(ns) }
func (bpfBackend) Attached(ns string) bool                           { return Attached(ns) }

type kernelBackend struct{}

func (kernelBackend) Mode() string                                      { return config.ModeKernel }
func (kernelBackend) Attach(ns string, r config.Router) (Report, error) { return AttachKernel(ns, r) }
func (kernelBackend) Detach(string) error                               { return DetachKernel() }
func (kernelBackend) State(ns string) (State, error)                    { return KernelState(ns) }
func (kernelBackend) Attached(string) bool                              { return KernelAttached() }

var backends = []Backend{bpfBackend{}, kernelBackend{}}

// BackendFor is the backend of a mode: bpf (or empty) or kernel.
func BackendFor(mode string) (Backend, error) {
	if mode == "" {
		mode = config.ModeBPF
	}
	for _, b := range backends {
		if b.Mode() == mode {
			return b, nil
		}
	}
	return nil, fmt.Errorf("mode %q: use bpf or kernel", mode)
}

// AttachedBackend is the backend with tunnels in ns (the current network
// namespace), or nil when nothing is attached.
func AttachedBackend(ns string) Backend {
	for _, b := range backends {
		if b.Attached(ns) {
			return b
		}
	}
	return nil
}

// AttachWith attaches r with the backend of its mode, refusing when the
// other backend holds the namespace: the two would fight over the
// tunnel names and routes. It holds the namespace's lock throughout.
func AttachWith(ns string, r config.Router) (Report, error) {
	b, err := BackendFor(r.Mode)
	if err != nil {
		return Report{}, err
	}
	l, err := lockNS(ns, opAttach)
	if err != nil {
		return Report{}, err
	}
	defer l.unlock()
	if cur := AttachedBackend(ns); cur != nil && cur.Mode() != b.Mode() {
		return Report{}, fmt.Errorf("grebpf is attached in %s mode in %s: run grebpf detach first", cur.Mode(), ns)
	}
	return b.Attach(ns, r)
}

// DetachWith detaches whichever backend holds ns, with the namespace's
// lock held, and says which mode that was. A BPF attach or detach that
// was killed half-way counts as attached: detach finishes it.
func DetachWith(ns string) (mode string, err error) {
	l, err := lockNS(ns, opDetach)
	if err != nil {
		return "", err
	}
	defer l.unlock()
	b := AttachedBackend(ns)
	if _, interrupted, _ := readJournal(ns); interrupted || b == nil {
		b = bpfBackend{}
	}
	return b.Mode(), b.Detach(ns)
}

// RoutesFor puts r's routes into the kernel but those of the tunnels in
// down, which it takes out: grebpf run's withdrawal of a dead peer's
// routes, so that a backup route or a routing daemon takes over. It holds
// the namespace's lock, as attach does, and changes routes only.
func RoutesFor(ns string, r config.Router, down map[string]bool) error {
	l, err := lockNS(ns, opAttach)
	if err != nil {
		return err
	}
	defer l.unlock()
	b := AttachedBackend(ns)
	if b == nil {
		return ErrNotAttached
	}
	_, plan, err := resolve(ns, r)
	if err != nil {
		return err
	}
	st, err := b.State(ns)
	if err != nil {
		return err
	}
	tunnels := make([]tunnel.Tunnel, len(st.Tunnels))
	for i, t := range st.Tunnels {
		tunnels[i] = t.Tunnel
	}
	routes := slices.DeleteFunc(slices.Clone(plan.Routes), func(rt tunnel.Route) bool { return down[rt.Tunnel] })
	return routing.Routes(tunnels, routes)
}
