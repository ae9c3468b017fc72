// Package loader loads grebpf's programs, attaches them to a WAN device
// (XDP and tcx, or clsact + cls_bpf where the kernel has no tcx), pins
// everything under /sys/fs/bpf/grebpf/<netns>/ so the data plane outlives
// the process, upgrades programs in place, and detaches.
package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"

	"github.com/grebpf/grebpf/bpf"
	"github.com/grebpf/grebpf/maps"
)

// Pin names inside a data plane's directory, besides the maps (pinned
// under their own names).
const (
	pinDecapLink = "decap_link" // XDP or tcx link; with XDP, decap_link_tc is to_tunnel_tc's tcx link
	pinDecapProg = "decap_prog" // clsact: cls_bpf holds the TC ingress program, the pin names it
	// encap_<ifindex>: encap's tcx link (or, under clsact, its program) on
	// the tunnel interface ifindex.
	pinEncapPrefix = "encap_"
	// fastpath_lan_<ifindex>: the XDP link of the LAN fast path on a device.
	pinFastPathPrefix = "fastpath_lan_"
)

// Dir is the pin directory of the data plane in network namespace ns.
func Dir(ns string) string { return filepath.Join(existingPinRoot(), ns) }

// Attached says whether a data plane is pinned for ns.
func Attached(ns string) bool {
	_, err := os.Stat(filepath.Join(Dir(ns), bpf.GrebpfMapAttachments))
	return err == nil
}

// Dataplane is an open, pinned data plane.
type Dataplane struct {
	Dir  string
	Maps maps.Maps
}

// Close releases the process's handles; the pins keep everything alive.
func (d *Dataplane) Close() error { return d.Maps.Close() }

// Open opens the pinned maps of ns for reading counters and state.
func Open(ns string) (*Dataplane, error) {
	dir := Dir(ns)
	if !Attached(ns) {
		return nil, fmt.Errorf("nothing attached in network namespace %s: run grebpf attach first", ns)
	}
	d := &Dataplane{Dir: dir}
	for name, dst := range map[string]**ebpf.Map{
		bpf.GrebpfMapTunnels:     &d.Maps.Tunnels,
		bpf.GrebpfMapEndpoints:   &d.Maps.Endpoints,
		bpf.GrebpfMapTunnelStats: &d.Maps.TunnelStats,
		bpf.GrebpfMapReasonStats: &d.Maps.ReasonStats,
		bpf.GrebpfMapAttachments: &d.Maps.Attachments,
		bpf.GrebpfMapPathMtus:    &d.Maps.PathMtus,
	} {
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), nil)
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("open pinned map %s: %w", name, err)
		}
		*dst = m
	}
	return d, nil
}

// load loads the programs and the maps, reusing pinned maps in dir (so a
// re-attach or upgrade keeps tunnels and counters) and pinning new ones.
func load(dir string) (*bpf.GrebpfObjects, error) {
	spec, err := bpf.LoadGrebpf()
	if err != nil {
		return nil, err
	}
	for name, m := range spec.Maps {
		// .rodata holds the constants setSysctls gives this load; it is
		// the program's own, never shared.
		if !strings.HasPrefix(name, ".") {
			m.Pinning = ebpf.PinByName
		}
	}
	applyVariant(spec)
	if err := setSysctls(spec); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create pin directory: %w", err)
	}
	var objs bpf.GrebpfObjects
	err = spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: dir}})
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		return nil, fmt.Errorf("maps pinned in %s come from an incompatible grebpf: run grebpf detach first", dir)
	}
	var verr *ebpf.VerifierError
	if errors.As(err, &verr) {
		return nil, fmt.Errorf("kernel verifier rejected a grebpf program (kernel too old or missing a BPF feature?): %v", verr)
	}
	if err != nil {
		return nil, fmt.Errorf("load BPF objects: %w", err)
	}
	return &objs, nil
}
