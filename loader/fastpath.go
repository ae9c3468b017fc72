package loader

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/grebpf/grebpf/internal/netns"
	"github.com/grebpf/grebpf/internal/routing"
)

// checkRedirectTargets refuses a fast path whose XDP redirects would be
// dropped. A frame redirected into a veth is received through NAPI on
// the veth's peer, which the kernel sets up only while the peer has an
// XDP program or GRO on; otherwise every frame is dropped, silently.
// A peer in a namespace that has no name under /run/netns cannot be
// looked at from here, and passes.
func checkRedirectTargets(devs []netlink.Link) error {
	for _, l := range devs {
		if l.Type() != "veth" {
			continue
		}
		peer, nsName := l.Attrs().ParentIndex, ""
		check := func() error {
			p, err := netlink.LinkByIndex(peer)
			if err != nil {
				return nil
			}
			if x := p.Attrs().Xdp; x != nil && x.Attached {
				return nil
			}
			if on, err := routing.GROEnabled(p.Attrs().Name); err != nil || on {
				return nil
			}
			where := ""
			if nsName != "" {
				where = " in network namespace " + nsName
			}
			return fmt.Errorf("the fast path redirects into %s, but its veth peer %s%s has no NAPI to receive on, so every frame would be dropped: turn GRO on there (ethtool -K %s gro on) or give it an XDP program",
				l.Attrs().Name, p.Attrs().Name, where, p.Attrs().Name)
		}
		if l.Attrs().NetNsID < 0 {
			if err := check(); err != nil {
				return err
			}
			continue
		}
		if nsName = namedNetns(l.Attrs().NetNsID); nsName == "" {
			continue
		}
		if err := netns.Do(nsName, check); err != nil {
			return err
		}
	}
	return nil
}

// namedNetns is the name under /run/netns of the namespace the current
// one knows as nsid, or "".
func namedNetns(nsid int) string {
	entries, _ := os.ReadDir(netns.Dir)
	for _, e := range entries {
		fd, err := unix.Open(filepath.Join(netns.Dir, e.Name()), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		id, err := netlink.GetNetNsIdByFd(fd)
		unix.Close(fd)
		if err == nil && id == nsid {
			return e.Name()
		}
	}
	return ""
}
