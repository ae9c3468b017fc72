package loader

import (
	"errors"
	"fmt"
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

// Detach removes everything Attach created in ns: the tunnel interfaces
// (their addresses and routes go with them), managed neighbours, programs,
// links, filters, the clsact qdisc and GRO setting on the WAN device if
// attach added them, maps and pins.
func Detach(ns string) error {
	if !Attached(ns) {
		return fmt.Errorf("%w in network namespace %s", ErrNotAttached, ns)
	}
	return detachDir(Dir(ns))
}

// detachDir works from the pins alone, so it also finishes a half-done
// attach. It carries on past errors and reports them all.
func detachDir(dir string) error {
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
	for _, t := range tunnels {
		errs = append(errs, routing.DeleteInterface(t.Link.Ifindex))
	}
	idx := int(att.Ifindex)
	dev, devErr := netlink.LinkByIndex(idx)
	if idx != 0 && devErr == nil {
		errs = append(errs, routing.ForgetNexthops(idx, tunnels, nil))
		if att.Tc == bpf.GrebpfTcAttachTC_CLSACT {
			if err := netlink.FilterDel(clsactFilter(idx, ebpf.AttachTCXIngress)); err != nil && !os.IsNotExist(err) {
				errs = append(errs, fmt.Errorf("delete cls_bpf filter: %w", err))
			}
		}
		if att.Flags&maps.AttachClsactOwned != 0 {
			errs = append(errs, removeClsactIfEmpty(dev))
		}
		if att.Flags&maps.AttachGROOwned != 0 {
			errs = append(errs, routing.SetGRO(dev.Attrs().Name, false))
		}
	}
	// Unlinking the pins drops the last reference to links, programs and
	// maps: the kernel detaches the links as they go.
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, fmt.Errorf("remove pins: %w", err))
	}
	os.Remove(filepath.Dir(dir)) // the grebpf root, if no other namespace uses it
	return errors.Join(errs...)
}

func removeClsactIfEmpty(dev netlink.Link) error {
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		fs, err := netlink.FilterList(dev, parent)
		if err != nil {
			return fmt.Errorf("list filters: %w", err)
		}
		if len(fs) > 0 {
			return nil // someone else's filters live there: leave the qdisc
		}
	}
	q := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: dev.Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := netlink.QdiscDel(q); err != nil {
		return fmt.Errorf("delete clsact qdisc: %w", err)
	}
	return nil
}
