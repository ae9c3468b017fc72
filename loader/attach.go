package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/grebpf/grebpf/bpf"
	"github.com/grebpf/grebpf/internal/config"
	"github.com/grebpf/grebpf/internal/routing"
	"github.com/grebpf/grebpf/internal/tunnel"
	"github.com/grebpf/grebpf/maps"
)

// Report says what attach chose, for the user and for show.
type Report struct {
	Device  string
	Decap   string // xdp | tc
	XDPMode string // native | generic (decap xdp only)
	TC      string // tcx | clsact
	Encap   string // peer | egress
	GRO     bool   // GRO turned on for XDP on a veth
	Changed bool   // false when attach found everything already in place
	// FastPath lists the LAN devices with the XDP fast path.
	FastPath []string
}

// cls_bpf filter identity for the clsact path: a priority and handle of our
// own so that we replace and delete only our filter.
const (
	filterPrio   = 0xb1
	filterHandle = 0x6772
)

// Attach loads and attaches the data plane for router r in the current
// network namespace (named ns for the pins): decap on the WAN device, one
// interface per tunnel with encap behind it, the maps, the routes. Running
// it again with the same router changes nothing; with a changed router it
// reconciles tunnels and routes and upgrades programs in place. A tunnel
// is known by its name: others coming and going never touch its
// interface, routes or counters. Bad input is refused before anything
// changes; a fresh attach that fails half-way is undone.
func Attach(ns string, r config.Router) (rep Report, err error) {
	wan, plan, err := resolve(ns, r)
	if err != nil {
		return rep, err
	}
	rep.Device = r.Device
	idx := wan.Attrs().Index

	var (
		prevAtt     maps.Attachment
		prevTunnels []tunnel.Tunnel
		own         []int
	)
	fresh := !Attached(ns)
	if !fresh {
		d, err := Open(ns)
		if err != nil {
			return rep, err
		}
		prevAtt, err = maps.ReadAttachment(&d.Maps)
		if err == nil {
			prevTunnels, err = maps.Tunnels(&d.Maps)
		}
		d.Close()
		if err != nil {
			return rep, err
		}
		if prevAtt.Ifindex != uint32(idx) {
			return rep, fmt.Errorf("grebpf is already attached to another device (ifindex %d) in %s: run grebpf detach first", prevAtt.Ifindex, ns)
		}
		for _, t := range prevTunnels {
			own = append(own, int(t.Link.Ifindex), int(t.Link.PeerIfindex))
		}
	}
	if err := routing.Check(wan, plan.Tunnels, plan.Routes, own...); err != nil {
		return rep, err
	}

	root, err := PinRoot()
	if err != nil {
		return rep, err
	}
	dir := filepath.Join(root, ns)
	objs, err := load(dir)
	if err != nil {
		if fresh {
			os.RemoveAll(dir)
		}
		return rep, err
	}
	defer objs.Close()
	defer func() {
		if err != nil && fresh {
			if derr := detachDir(dir); derr != nil {
				err = fmt.Errorf("%w (and undoing it failed: %v; run grebpf detach)", err, derr)
			}
		}
	}()

	att := chooseAttachment(plan, wan)
	if !fresh {
		modeFlags := uint32(maps.AttachXDPGeneric | maps.AttachFastPath | maps.AttachEncapEgress)
		if att.Decap != prevAtt.Decap || att.Flags&modeFlags != prevAtt.Flags&modeFlags ||
			(plan.TC != config.TCAuto && tcName(prevAtt.Tc) != plan.TC) {
			return rep, fmt.Errorf("grebpf is attached with decap %s, tc %s: run grebpf detach first to change the attach mode",
				decapName(prevAtt.Decap), tcName(prevAtt.Tc))
		}
		att.Tc = prevAtt.Tc
		att.Flags = prevAtt.Flags
	}
	if att.Tc == 0 {
		att.Tc = bpf.GrebpfTcAttachTC_TCX
		if plan.TC == config.TCClsact {
			att.Tc = bpf.GrebpfTcAttachTC_CLSACT
		}
	}
	// The record first, so that detach can undo whatever follows.
	if err = maps.WriteAttachment(&objs.GrebpfMaps, att); err != nil {
		return rep, err
	}

	// Decap first (it passes everything until a tunnel's endpoint exists),
	// then each tunnel: interface, maps, encap; then the routes that send
	// traffic into the tunnels. Each step only starts traffic the previous
	// ones can already handle.
	c, err := attachDecap(dir, objs, wan, &att, plan.TC)
	if err != nil {
		return rep, err
	}
	rep.Changed = fresh || c
	if err = maps.WriteAttachment(&objs.GrebpfMaps, att); err != nil {
		return rep, err
	}
	tunnels, c, err := applyTunnels(dir, objs, wan, &att, plan, prevTunnels)
	if err != nil {
		return rep, err
	}
	rep.Changed = rep.Changed || c
	c, err = attachFastPath(dir, objs.FastpathLan, plan.FastPath, att.Flags)
	if err != nil {
		return rep, err
	}
	rep.Changed = rep.Changed || c
	rep.FastPath = plan.FastPath
	before, err := routing.Ours(tunnels)
	if err != nil {
		return rep, err
	}
	if err = routing.Routes(tunnels, plan.Routes); err != nil {
		return rep, err
	}
	after, err := routing.Ours(tunnels)
	if err != nil {
		return rep, err
	}
	rep.Changed = rep.Changed || !sameRoutes(before, after)
	if err = maps.WriteAttachment(&objs.GrebpfMaps, att); err != nil {
		return rep, err
	}
	rep.Decap = decapName(att.Decap)
	rep.TC = tcName(att.Tc)
	rep.Encap = encapName(att.Flags)
	rep.GRO = att.Flags&maps.AttachGROOwned != 0
	if att.Decap == bpf.GrebpfDecapAttachDECAP_XDP {
		rep.XDPMode = "native"
		if att.Flags&maps.AttachXDPGeneric != 0 {
			rep.XDPMode = "generic"
		}
	}
	return rep, nil
}

// encapName names the encap attach point recorded in attachment flags.
func encapName(flags uint32) string {
	if flags&maps.AttachEncapEgress != 0 {
		return config.EncapEgress
	}
	return config.EncapPeer
}

func sameRoutes(a, b []netlink.Route) bool {
	key := func(r netlink.Route) string { return fmt.Sprint(r.LinkIndex, r.Dst, r.Src) }
	ka, kb := make([]string, len(a)), make([]string, len(b))
	for i := range a {
		ka[i] = key(a[i])
	}
	for i := range b {
		kb[i] = key(b[i])
	}
	slices.Sort(ka)
	slices.Sort(kb)
	return slices.Equal(ka, kb)
}

// applyTunnels makes each planned tunnel's interface, map entries and
// encap attachment, and takes away tunnels no longer planned. It returns
// the tunnels as the kernel now has them.
func applyTunnels(dir string, objs *bpf.GrebpfObjects, wan netlink.Link, att *maps.Attachment, plan config.Plan, prev []tunnel.Tunnel) ([]tunnel.Tunnel, bool, error) {
	// One netlink socket for the lot: the package-level calls open one per
	// request, which is most of the cost at 10,000 tunnels.
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, false, fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	m := &objs.GrebpfMaps
	prevByName := map[string]tunnel.Tunnel{}
	for _, t := range prev {
		prevByName[t.Name] = t
	}
	tunnels, err := routing.KeepResolved(h, wan, plan.Tunnels)
	if err != nil {
		return nil, false, err
	}
	changed := false
	encapPins := map[string]bool{}
	for i, t := range tunnels {
		if t, err = routing.Interface(h, wan, t); err != nil {
			return nil, changed, err
		}
		tunnels[i] = t
		p, had := prevByName[t.Name]
		delete(prevByName, t.Name)
		if had && p.Link.Ifindex != t.Link.Ifindex {
			// The interface was made anew (someone deleted it): its old
			// entries name a device that is gone.
			if err := maps.DeleteTunnel(m, p); err != nil {
				return nil, changed, err
			}
			had = false
		}
		if had && (p.Local != t.Local || p.Remote != t.Remote) {
			if err := maps.DeleteEndpoint(m, p); err != nil {
				return nil, changed, err
			}
		}
		p.MTU = t.MTU // the interface holds it, not the maps: Interface set it
		if !had || !tunnel.SameConfig(p, t) || p.WANNexthop != t.WANNexthop || p.Link.WANIfindex != t.Link.WANIfindex {
			changed = true
			if err := maps.PutTunnel(m, t); err != nil {
				return nil, changed, err
			}
		}
		pin := encapPin(dir, t.Link.Ifindex)
		encapPins[pin] = true
		c, err := attachEncap(pin, objs.EncapTc, t.Link, att, plan.TC)
		if err != nil {
			return nil, changed, fmt.Errorf("tunnel %s: %w", t.Name, err)
		}
		changed = changed || c
	}
	var gone []tunnel.Tunnel
	for _, t := range prevByName {
		gone = append(gone, t)
	}
	for _, t := range gone {
		changed = true
		if err := maps.DeleteTunnel(m, t); err != nil {
			return nil, changed, err
		}
		if err := routing.DeleteInterface(t.Link.Ifindex); err != nil {
			return nil, changed, err
		}
	}
	if err := routing.ForgetNexthops(wan.Attrs().Index, gone, tunnels); err != nil {
		return nil, changed, err
	}
	// Encap pins of interfaces that are gone (deleted by hand, or above).
	pins, _ := filepath.Glob(filepath.Join(dir, pinEncapPrefix+"*"))
	for _, p := range pins {
		if !encapPins[p] {
			changed = true
			os.Remove(p)
		}
	}
	return tunnels, changed, nil
}

// resolve finds the WAN device and validates r against its MTU.
func resolve(ns string, r config.Router) (netlink.Link, config.Plan, error) {
	if r.Device == "" {
		_, err := r.Validate(0)
		return nil, config.Plan{}, err
	}
	for _, dev := range append([]string{r.Device}, r.FastPath...) {
		if _, err := netlink.LinkByName(dev); err != nil {
			return nil, config.Plan{}, fmt.Errorf("no such interface %q in network namespace %s: check `ip link` (or --netns)", dev, ns)
		}
	}
	l, err := netlink.LinkByName(r.Device)
	if err != nil {
		return nil, config.Plan{}, err
	}
	plan, err := r.Validate(l.Attrs().MTU)
	return l, plan, err
}

func decapName(d bpf.GrebpfDecapAttach) string {
	switch d {
	case bpf.GrebpfDecapAttachDECAP_XDP:
		return config.DecapXDP
	case bpf.GrebpfDecapAttachDECAP_TC:
		return config.DecapTC
	}
	return "none"
}

func tcName(t bpf.GrebpfTcAttach) string {
	switch t {
	case bpf.GrebpfTcAttachTC_TCX:
		return config.TCX
	case bpf.GrebpfTcAttachTC_CLSACT:
		return config.TCClsact
	}
	return "none"
}

// chooseAttachment resolves "auto". Decap defaults to TC ingress on a veth
// (measured: XDP on a veth turns the peer's TSO off and TCP falls from ~15
// to under 5 Gbit/s), and to XDP everywhere else, where it is the cheaper
// hook. The fast path is XDP.
func chooseAttachment(p config.Plan, l netlink.Link) maps.Attachment {
	att := maps.Attachment{Ifindex: uint32(l.Attrs().Index)}
	if p.XDPGeneric {
		att.Flags |= maps.AttachXDPGeneric
	}
	if p.Encap == config.EncapEgress {
		att.Flags |= maps.AttachEncapEgress
	}
	if len(p.FastPath) > 0 {
		att.Flags |= maps.AttachFastPath
		att.Decap = bpf.GrebpfDecapAttachDECAP_XDP
		return att
	}
	switch p.Decap {
	case config.DecapXDP:
		att.Decap = bpf.GrebpfDecapAttachDECAP_XDP
	case config.DecapTC:
		att.Decap = bpf.GrebpfDecapAttachDECAP_TC
	default:
		att.Decap = bpf.GrebpfDecapAttachDECAP_XDP
		if l.Type() == "veth" && !p.XDPGeneric {
			att.Decap = bpf.GrebpfDecapAttachDECAP_TC
		}
	}
	return att
}

// sameProgram says whether the attached program is the one just loaded
// (same instructions), in which case attach leaves it alone.
func sameProgram(attachedID ebpf.ProgramID, p *ebpf.Program) bool {
	old, err := ebpf.NewProgramFromID(attachedID)
	if err != nil {
		return false
	}
	defer old.Close()
	oi, err1 := old.Info()
	ni, err2 := p.Info()
	return err1 == nil && err2 == nil && oi.Tag == ni.Tag
}

// attachLink attaches through a BPF link pinned at pin, or, when one is
// pinned already, updates it to prog if the program differs.
func attachLink(pin string, prog *ebpf.Program, attach func() (link.Link, error)) (changed bool, err error) {
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		defer l.Close()
		info, err := l.Info()
		if err != nil {
			return false, fmt.Errorf("inspect pinned link %s: %w", pin, err)
		}
		if sameProgram(info.Program, prog) {
			return false, nil
		}
		if err := l.Update(prog); err != nil {
			return false, fmt.Errorf("upgrade program of %s: %w", pin, err)
		}
		return true, nil
	}
	l, err := attach()
	if err != nil {
		return false, err
	}
	defer l.Close()
	if err := l.Pin(pin); err != nil {
		return false, fmt.Errorf("pin link: %w", err)
	}
	return true, nil
}

func attachDecap(dir string, objs *bpf.GrebpfObjects, l netlink.Link, att *maps.Attachment, want string) (bool, error) {
	idx := int(att.Ifindex)
	if att.Decap == bpf.GrebpfDecapAttachDECAP_TC {
		changed, own, err := attachTC(filepath.Join(dir, pinDecapLink), filepath.Join(dir, pinDecapProg), objs.DecapTc, idx, ebpf.AttachTCXIngress, &att.Tc, want)
		if own {
			att.Flags |= maps.AttachClsactOwned
		}
		return changed, err
	}
	flags := xdpMode(att.Flags)
	prog := objs.DecapXdp
	if att.Flags&maps.AttachFastPath != 0 {
		prog = objs.FastpathWan
	}
	changed, err := attachLink(filepath.Join(dir, pinDecapLink), prog, func() (link.Link, error) {
		return link.AttachXDP(link.XDPOptions{Program: prog, Interface: idx, Flags: flags})
	})
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) && flags == link.XDPDriverMode {
		return false, fmt.Errorf("device %s has no native XDP support: use --xdp-generic or --decap tc", l.Attrs().Name)
	}
	if err != nil {
		return false, fmt.Errorf("attach XDP decap to %s: %w", l.Attrs().Name, err)
	}
	// XDP decap passes what it stripped on to TC ingress, which hands it
	// to the tunnel interface.
	c, own, err := attachTC(filepath.Join(dir, pinDecapLink+"_tc"), filepath.Join(dir, pinDecapProg), objs.ToTunnelTc, idx, ebpf.AttachTCXIngress, &att.Tc, want)
	if own {
		att.Flags |= maps.AttachClsactOwned
	}
	if err != nil {
		return changed, fmt.Errorf("attach to_tunnel_tc to %s: %w", l.Attrs().Name, err)
	}
	changed = changed || c
	// XDP on a veth receives through NAPI only with GRO on or XDP on the
	// peer; without it the ring overflows under TCP load.
	if l.Type() == "veth" && flags == link.XDPDriverMode && att.Flags&maps.AttachGROOwned == 0 {
		on, err := routing.GROEnabled(l.Attrs().Name)
		if err != nil {
			return changed, err
		}
		if !on {
			if err := routing.SetGRO(l.Attrs().Name, true); err != nil {
				return changed, fmt.Errorf("turn GRO on for XDP on veth %s: %w", l.Attrs().Name, err)
			}
			att.Flags |= maps.AttachGROOwned
			changed = true
		}
	}
	return changed, nil
}

func xdpMode(attachFlags uint32) link.XDPAttachFlags {
	if attachFlags&maps.AttachXDPGeneric != 0 {
		return link.XDPGenericMode
	}
	return link.XDPDriverMode
}

// fastPathPin names the pinned link of the LAN fast path on ifindex.
func fastPathPin(dir string, ifindex int) string {
	return filepath.Join(dir, fmt.Sprintf("%s%d", pinFastPathPrefix, ifindex))
}

// attachFastPath puts fastpath_lan on each LAN device and takes it off
// devices no longer listed.
func attachFastPath(dir string, prog *ebpf.Program, devs []string, attachFlags uint32) (changed bool, err error) {
	want := map[string]bool{}
	for _, name := range devs {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return changed, fmt.Errorf("no such interface %q: check `ip link`", name)
		}
		pin := fastPathPin(dir, l.Attrs().Index)
		want[pin] = true
		c, err := attachLink(pin, prog, func() (link.Link, error) {
			return link.AttachXDP(link.XDPOptions{Program: prog, Interface: l.Attrs().Index, Flags: xdpMode(attachFlags)})
		})
		if err != nil {
			return changed, fmt.Errorf("attach the XDP fast path to %s: %w", name, err)
		}
		changed = changed || c
	}
	pins, _ := filepath.Glob(filepath.Join(dir, pinFastPathPrefix+"*"))
	for _, p := range pins {
		if !want[p] {
			changed = true
			if err := os.Remove(p); err != nil {
				return changed, fmt.Errorf("take the fast path off: %w", err)
			}
		}
	}
	return changed, nil
}

// encapPin names the pinned encap attachment of the tunnel interface
// ifindex: its tcx link, or under clsact its program.
func encapPin(dir string, ifindex uint32) string {
	return filepath.Join(dir, fmt.Sprintf("%s%d", pinEncapPrefix, ifindex))
}

// attachEncap puts encap where the packets the kernel routes into the
// tunnel pass: the ingress of the interface's veth peer, or the
// interface's egress. Both devices are grebpf's, so is a clsact qdisc on
// them.
func attachEncap(pin string, prog *ebpf.Program, l tunnel.Link, att *maps.Attachment, want string) (bool, error) {
	dev, hook := int(l.PeerIfindex), ebpf.AttachTCXIngress
	if att.Flags&maps.AttachEncapEgress != 0 {
		dev, hook = int(l.Ifindex), ebpf.AttachTCXEgress
	}
	changed, _, err := attachTC(pin, pin, prog, dev, hook, &att.Tc, want)
	return changed, err
}

// attachTC attaches with tcx, falling back to clsact + cls_bpf when the
// kernel has no tcx and the user did not insist on it (*tc says which was
// used). ownQdisc says that it added the clsact qdisc.
func attachTC(linkPin, progPin string, prog *ebpf.Program, idx int, hook ebpf.AttachType, tc *bpf.GrebpfTcAttach, want string) (changed, ownQdisc bool, err error) {
	if *tc == bpf.GrebpfTcAttachTC_TCX {
		changed, err := attachLink(linkPin, prog, func() (link.Link, error) {
			return link.AttachTCX(link.TCXOptions{Interface: idx, Program: prog, Attach: hook})
		})
		if !errors.Is(err, ebpf.ErrNotSupported) {
			if err != nil {
				return false, false, fmt.Errorf("attach tcx: %w", err)
			}
			return changed, false, nil
		}
		if want == config.TCX {
			return false, false, errors.New("this kernel has no tcx (Linux 6.6+): use --tc clsact")
		}
		*tc = bpf.GrebpfTcAttachTC_CLSACT
	}
	return attachClsact(progPin, prog, idx, hook)
}

func clsactFilter(idx int, dir ebpf.AttachType) *netlink.BpfFilter {
	parent := uint32(netlink.HANDLE_MIN_EGRESS)
	if dir == ebpf.AttachTCXIngress {
		parent = netlink.HANDLE_MIN_INGRESS
	}
	return &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: idx, Parent: parent, Handle: filterHandle,
			Priority: filterPrio, Protocol: unix.ETH_P_ALL,
		},
		Name: "grebpf", DirectAction: true,
	}
}

func hasClsact(idx int) (bool, error) {
	l, err := netlink.LinkByIndex(idx)
	if err != nil {
		return false, err
	}
	qs, err := netlink.QdiscList(l)
	if err != nil {
		return false, err
	}
	for _, q := range qs {
		if q.Type() == "clsact" {
			return true, nil
		}
	}
	return false, nil
}

func attachClsact(pin string, prog *ebpf.Program, idx int, dir ebpf.AttachType) (changed, ownQdisc bool, err error) {
	if old, err := ebpf.LoadPinnedProgram(pin, nil); err == nil {
		oi, err := old.Info()
		old.Close()
		if id, ok := oi.ID(); err == nil && ok && sameProgram(id, prog) {
			return false, false, nil
		}
	}
	has, err := hasClsact(idx)
	if err != nil {
		return false, false, fmt.Errorf("list qdiscs: %w", err)
	}
	if !has {
		q := &netlink.GenericQdisc{
			QdiscAttrs: netlink.QdiscAttrs{LinkIndex: idx, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
			QdiscType:  "clsact",
		}
		if err := netlink.QdiscAdd(q); err != nil {
			return false, false, fmt.Errorf("add clsact qdisc: %w", err)
		}
		ownQdisc = true
	}
	f := clsactFilter(idx, dir)
	f.Fd = prog.FD()
	if err := netlink.FilterReplace(f); err != nil {
		return false, ownQdisc, fmt.Errorf("attach cls_bpf filter: %w", err)
	}
	os.Remove(pin)
	if err := prog.Pin(pin); err != nil {
		return false, ownQdisc, fmt.Errorf("pin program: %w", err)
	}
	return true, ownQdisc, nil
}
