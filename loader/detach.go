package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/grebpf/grebpf/bpf"
	"github.com/grebpf/grebpf/internal/routing"
	"github.com/grebpf/grebpf/internal/tunnel"
	"github.com/grebpf/grebpf/maps"
)

// ErrNotAttached is returned by Detach when there is nothing to detach.
var ErrNotAttached = errors.New("nothing attached")

// detachBPF is Detach for the BPF backend, with the namespace's lock
// held. It journals first, so that a detach killed half-way is finished
// by the next attach or detach.
func detachBPF(ns string) error {
	x := &txn{}
	defer x.close()
	recovered, err := recoverInterrupted(x, ns)
	if err != nil {
		return err
	}
	rec, _, err := readRecord(ns)
	if err != nil {
		return err
	}
	if !Attached(ns) {
		if recovered != "" {
			return nil
		}
		return fmt.Errorf("%w in network namespace %s", ErrNotAttached, ns)
	}
	if err := writeJSON(journalPath(ns), journal{Op: opDetach, PID: os.Getpid()}); err != nil {
		return err
	}
	if err := detachAll(x, ns, rec); err != nil {
		return err
	}
	if err := removeFile(recordPath(ns)); err != nil {
		return err
	}
	return removeFile(journalPath(ns))
}

// detachAll removes everything of grebpf's in ns: what the pins name,
// interfaces marked as grebpf's that no pin names (an attach killed
// between making one and recording it), and the next hops of the records
// given.
func detachAll(x *txn, ns string, recs ...record) error {
	errs := []error{detachDir(x, Dir(ns))}
	if err := x.at("remove stray interfaces"); err != nil {
		return err
	}
	own, err := routing.OwnInterfaces()
	errs = append(errs, err)
	for _, idx := range own {
		errs = append(errs, routing.DeleteInterface(uint32(idx)))
	}
	for _, r := range recs {
		if wan, err := netlink.LinkByName(r.Router.Device); err == nil {
			errs = append(errs, routing.ForgetNeighbours(wan.Attrs().Index, r.Nexthops, nil))
		}
	}
	return errors.Join(errs...)
}

// detachDir removes what the pins in dir name: the tunnel interfaces
// (their addresses and routes go with them), managed neighbours,
// programs, links, filters, the clsact qdisc and GRO setting on the WAN
// device if attach added them, maps and pins. It carries on past errors
// and reports them all.
func detachDir(x *txn, dir string) error {
	var (
		errs    []error
		m       maps.Maps
		att     maps.Attachment
		tunnels []tunnel.Tunnel
	)
	if am, err := ebpf.LoadPinnedMap(filepath.Join(dir, bpf.GrebpfMapAttachments), nil); err == nil {
		m.Attachments = am
		att, _ = maps.ReadAttachment(&m)
		am.Close()
	}
	if tm, err := ebpf.LoadPinnedMap(filepath.Join(dir, bpf.GrebpfMapTunnels), nil); err == nil {
		m.Tunnels = tm
		tunnels, _ = maps.Tunnels(&m)
		tm.Close()
	}
	if err := x.at("remove interfaces"); err != nil {
		return err
	}
	var nexthops []netip.Addr
	for _, t := range tunnels {
		errs = append(errs, routing.DeleteInterface(t.Link.Ifindex))
		nexthops = append(nexthops, t.WANNexthop)
	}
	idx := int(att.Ifindex)
	dev, devErr := netlink.LinkByIndex(idx)
	if idx != 0 && devErr == nil {
		if err := x.at("restore the WAN device"); err != nil {
			return err
		}
		errs = append(errs, routing.ForgetNeighbours(idx, nexthops, nil))
		if att.Tc == bpf.GrebpfTcAttachTC_CLSACT {
			errs = append(errs, deleteFilter(dev))
		}
		if att.Flags&maps.AttachClsactOwned != 0 {
			errs = append(errs, removeClsactIfEmpty(dev))
		}
		if att.Flags&maps.AttachGROOwned != 0 {
			errs = append(errs, routing.SetGRO(dev.Attrs().Name, false))
		}
	}
	if err := x.at("remove pins"); err != nil {
		return err
	}
	// Unlinking the pins drops the last reference to links, programs and
	// maps: the kernel detaches the links as they go. The attachment
	// record goes last: while it is there, detach can be run again.
	pins, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, p := range pins {
		if filepath.Base(p) != bpf.GrebpfMapAttachments {
			errs = append(errs, os.RemoveAll(p))
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, fmt.Errorf("remove pins: %w", err))
	}
	os.Remove(filepath.Dir(dir)) // the grebpf root, if no other namespace uses it
	return errors.Join(errs...)
}

// deleteFilter deletes our cls_bpf filter from dev's TC ingress, if it
// is there: a detach cut short may have taken it, or the qdisc, already.
func deleteFilter(dev netlink.Link) error {
	if has, err := hasClsact(dev.Attrs().Index); err != nil || !has {
		return err
	}
	fs, err := netlink.FilterList(dev, netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		return fmt.Errorf("list filters: %w", err)
	}
	for _, f := range fs {
		if a := f.Attrs(); a.Handle == filterHandle && a.Priority == filterPrio {
			if err := netlink.FilterDel(ClsactFilter(dev.Attrs().Index, ebpf.AttachTCXIngress)); err != nil {
				return fmt.Errorf("delete cls_bpf filter: %w", err)
			}
		}
	}
	return nil
}

func removeClsactIfEmpty(dev netlink.Link) error {
	has, err := hasClsact(dev.Attrs().Index)
	if err != nil || !has {
		return err // a crash may have come between marking it ours and adding it
	}
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		fs, err := netlink.FilterList(dev, parent)
		if err != nil {
			return fmt.Errorf("list filters: %w", err)
		}
		if len(fs) > 0 {
			return nil // someone else's filters live there: leave the qdisc
		}
	}
	if err := netlink.QdiscDel(ClsactQdisc(dev.Attrs().Index)); err != nil {
		return fmt.Errorf("delete clsact qdisc: %w", err)
	}
	return nil
}
