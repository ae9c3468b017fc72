package loader

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/grebpf/grebpf/internal/routing"
	"github.com/grebpf/grebpf/maps"
)

// AttachAgain ends a problem that a new attach fixes: grebpf run, which
// follows such changes, attaches again when it sees one.
const AttachAgain = "run grebpf attach again"

// problems says what, in the kernel around a data plane, stops or slows
// its traffic since attach: each a line naming the fix. The data plane
// itself follows most changes (routes and neighbours are looked up per
// packet), so a problem is either one the user must fix outside grebpf,
// or one a new attach fixes.
func problems(s State) []string {
	var out []string
	wan, err := netlink.LinkByIndex(int(s.Attachment.Ifindex))
	if err != nil {
		return []string{fmt.Sprintf("the WAN device (ifindex %d) is gone: run grebpf detach, then grebpf attach on the device that replaced it", s.Attachment.Ifindex)}
	}
	name := wan.Attrs().Name
	switch {
	case wan.Attrs().Flags&net.FlagUp == 0:
		out = append(out, fmt.Sprintf("%s is down: bring it up (ip link set %s up); grebpf carries on by itself", name, name))
	case wan.Attrs().OperState == netlink.OperDown || wan.Attrs().OperState == netlink.OperLowerLayerDown:
		out = append(out, fmt.Sprintf("%s has no carrier: check its link; grebpf carries on by itself", name))
	}
	if AcceptsSourceRoutes(name) != (s.Attachment.Flags&maps.AttachAcceptSourceRoute != 0) {
		out = append(out, fmt.Sprintf("accept_source_route of %s changed since attach, and decap still follows the old setting: "+AttachAgain, name))
	}
	local := map[netip.Addr]bool{}
	if addrs, err := netlink.AddrList(nil, unix.AF_UNSPEC); err == nil {
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok {
				local[ip.Unmap()] = true
			}
		}
	}
	managed := map[netip.Addr]bool{}
	if ns, err := netlink.NeighList(wan.Attrs().Index, unix.AF_UNSPEC); err == nil {
		for _, n := range ns {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && n.FlagsExt&netlink.NTF_EXT_MANAGED != 0 {
				managed[ip.Unmap()] = true
			}
		}
	}
	for _, t := range s.Tunnels {
		l, err := netlink.LinkByIndex(int(t.Link.Ifindex))
		if err != nil || l.Attrs().Name != t.Name {
			out = append(out, fmt.Sprintf("tunnel %s: its interface is gone: "+AttachAgain, t.Name))
			continue
		}
		if l.Attrs().Flags&net.FlagUp == 0 {
			out = append(out, fmt.Sprintf("tunnel %s: %s is down: bring it up (ip link set %s up)", t.Name, t.Name, t.Name))
		}
		if !local[t.Local] {
			out = append(out, fmt.Sprintf("tunnel %s: local %s is no longer an address here: add it back to %s", t.Name, t.Local, name))
		}
		if fit := wan.Attrs().MTU - t.Overhead(); int(t.MTU) > fit {
			out = append(out, fmt.Sprintf("tunnel %s: MTU %d is more than %s's MTU %d leaves (%d), so larger packets without DF are dropped (senders of DF ones are told the MTU): "+AttachAgain+" to follow it",
				t.Name, t.MTU, name, wan.Attrs().MTU, fit))
		}
		nh, err := routing.WANNexthop(wan, t.Tunnel)
		if err != nil {
			out = append(out, err.Error())
			continue
		}
		if !managed[nh] {
			out = append(out, fmt.Sprintf("tunnel %s: next hop %s on %s is no longer kept resolved (flushed with the link or address?), so a change of its MAC goes unnoticed: "+AttachAgain, t.Name, nh, name))
		}
	}
	return out
}
