package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/grebpf/grebpf/bpf"
	"github.com/grebpf/grebpf/internal/config"
	"github.com/grebpf/grebpf/internal/routing"
	"github.com/grebpf/grebpf/maps"
)

// Report says what attach chose, for the user and for show.
type Report struct {
	Device  string
	Decap   string // xdp | tc
	XDPMode string // native | generic (decap xdp only)
	TC      string // tcx | clsact
	GRO     bool   // GRO turned on for XDP on a veth
	DecapL3 bool   // kernel knows BPF_F_ADJ_ROOM_DECAP_L3_IPV4
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
// network namespace (named ns for the pins), fills its maps and the kernel
// side. Running it again with the same router changes nothing; with a
// changed router it reconciles tunnels and routes and upgrades programs in
// place. Bad input is refused before anything changes; a fresh attach that
// fails half-way is undone.
func Attach(ns string, r config.Router) (rep Report, err error) {
	l, plan, err := resolve(ns, r)
	if err != nil {
		return rep, err
	}
	rep.Device = r.Device
	idx := l.Attrs().Index
	if err := routing.Check(l, plan.Tunnels, plan.Routes); err != nil {
		return rep, err
	}

	var (
		prevAtt     maps.Attachment
		prevTunnels []maps.Tunnel
		prevRoutes  []maps.Route
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
		if err == nil {
			prevRoutes, err = maps.Routes(&d.Maps)
		}
		d.Close()
		if err != nil {
			return rep, err
		}
		if prevAtt.Ifindex != uint32(idx) {
			return rep, fmt.Errorf("grebpf is already attached to another device (ifindex %d) in %s: run grebpf detach first", prevAtt.Ifindex, ns)
		}
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

	rep.DecapL3 = HaveDecapL3(objs.ProbeDecapL3)
	att, err := chooseAttachment(plan, l, rep.DecapL3)
	if err != nil {
		return rep, err
	}
	if !fresh {
		modeFlags := uint32(maps.AttachXDPGeneric | maps.AttachFastPath)
		if att.Decap != prevAtt.Decap || att.Flags&modeFlags != prevAtt.Flags&modeFlags ||
			(plan.TC != config.TCAuto && tcName(prevAtt.Tc) != plan.TC) {
			return rep, fmt.Errorf("grebpf is attached with decap %s, tc %s: run grebpf detach first to change the attach mode",
				decapName(prevAtt.Decap), tcName(prevAtt.Tc))
		}
		att.Tc = prevAtt.Tc
		att.Flags = prevAtt.Flags
	}

	// Maps first, then decap, then encap, then the kernel routes that send
	// traffic our way: each step only starts traffic the previous one can
	// already handle.
	changed, err := reconcileMaps(&objs.GrebpfMaps, prevTunnels, prevRoutes, plan)
	if err != nil {
		return rep, err
	}
	rep.Changed = changed || fresh
	if err = maps.WriteAttachment(&objs.GrebpfMaps, att); err != nil {
		return rep, err
	}
	if att.Tc == 0 {
		att.Tc = bpf.GrebpfTcAttachTC_TCX
		if plan.TC == config.TCClsact {
			att.Tc = bpf.GrebpfTcAttachTC_CLSACT
		}
	}
	c, err := attachDecap(dir, objs, l, &att, plan.TC)
	if err != nil {
		return rep, err
	}
	rep.Changed = rep.Changed || c
	c, err = attachEncap(dir, objs.EncapTc, idx, &att, plan.TC)
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
	if err = maps.WriteAttachment(&objs.GrebpfMaps, att); err != nil {
		return rep, err
	}
	applied, err := routing.Apply(l, plan.Tunnels, plan.Routes)
	if err != nil {
		return rep, err
	}
	inMap, err := maps.Tunnels(&objs.GrebpfMaps)
	if err != nil {
		return rep, err
	}
	current := map[uint32]maps.Tunnel{}
	for _, t := range inMap {
		current[t.ID] = t
	}
	for _, t := range applied {
		c := current[t.ID]
		t.AddrOwned = t.AddrOwned || c.AddrOwned
		if equalTunnel(c, t) {
			continue
		}
		rep.Changed = true
		if err = maps.PutTunnel(&objs.GrebpfMaps, t); err != nil {
			return rep, err
		}
	}
	rep.Decap = decapName(att.Decap)
	rep.TC = tcName(att.Tc)
	rep.GRO = att.Flags&maps.AttachGROOwned != 0
	if att.Decap == bpf.GrebpfDecapAttachDECAP_XDP {
		rep.XDPMode = "native"
		if att.Flags&maps.AttachXDPGeneric != 0 {
			rep.XDPMode = "generic"
		}
	}
	return rep, nil
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
// when the kernel can keep GSO through it (measured: XDP on a veth turns
// the peer's TSO off and TCP falls from ~15 to under 5 Gbit/s), and to XDP
// everywhere else, where it is the cheaper hook. The fast path is XDP.
func chooseAttachment(p config.Plan, l netlink.Link, decapL3 bool) (maps.Attachment, error) {
	att := maps.Attachment{Ifindex: uint32(l.Attrs().Index)}
	if p.XDPGeneric {
		att.Flags |= maps.AttachXDPGeneric
	}
	if len(p.FastPath) > 0 {
		att.Flags |= maps.AttachFastPath
		att.Decap = bpf.GrebpfDecapAttachDECAP_XDP
		return att, nil
	}
	switch p.Decap {
	case config.DecapXDP:
		att.Decap = bpf.GrebpfDecapAttachDECAP_XDP
	case config.DecapTC:
		if !decapL3 {
			return att, errors.New("this kernel's bpf_skb_adjust_room lacks BPF_F_ADJ_ROOM_DECAP_L3_IPV4 (Linux 6.3+), which TC decap needs: use --decap xdp")
		}
		att.Decap = bpf.GrebpfDecapAttachDECAP_TC
	default:
		att.Decap = bpf.GrebpfDecapAttachDECAP_XDP
		if l.Type() == "veth" && decapL3 && !p.XDPGeneric {
			att.Decap = bpf.GrebpfDecapAttachDECAP_TC
		}
	}
	return att, nil
}

// reconcileMaps makes the maps hold exactly plan's tunnels and routes.
func reconcileMaps(m *maps.Maps, prevTunnels []maps.Tunnel, prevRoutes []maps.Route, plan config.Plan) (changed bool, err error) {
	want := map[uint32]maps.Tunnel{}
	for _, t := range plan.Tunnels {
		want[t.ID] = t
	}
	prev := map[uint32]maps.Tunnel{}
	for _, t := range prevTunnels {
		prev[t.ID] = t
		w, ok := want[t.ID]
		if ok && w.Local == t.Local && w.Remote == t.Remote {
			continue
		}
		changed = true
		if err := maps.DeleteTunnel(m, t); err != nil {
			return changed, err
		}
	}
	// Tunnels whose overlay moved lose their kernel side now; Apply adds
	// the new one.
	var gone []maps.Tunnel
	for _, t := range prevTunnels {
		if w, ok := want[t.ID]; !ok || w.OverlayLocal != t.OverlayLocal || w.OverlayRemote != t.OverlayRemote {
			gone = append(gone, t)
		}
	}
	if len(gone) > 0 {
		var att maps.Attachment
		if att, err = maps.ReadAttachment(m); err != nil {
			return changed, err
		}
		if err := routing.Remove(int(att.Ifindex), gone, false); err != nil {
			return changed, err
		}
	}
	for _, t := range plan.Tunnels {
		p, ok := prev[t.ID]
		if ok && p.OverlayLocal == t.OverlayLocal {
			// What attach learnt last time stays until Apply says otherwise.
			t.AddrOwned, t.WANNexthop = p.AddrOwned, p.WANNexthop
		}
		if ok && equalTunnel(p, t) {
			continue
		}
		changed = true
		if err := maps.PutTunnel(m, t); err != nil {
			return changed, err
		}
	}
	wantRoute := map[maps.Route]bool{}
	for _, r := range plan.Routes {
		wantRoute[r] = true
	}
	for _, r := range prevRoutes {
		if wantRoute[r] {
			delete(wantRoute, r)
			continue
		}
		changed = true
		if err := maps.DeleteRoute(m, r.Prefix); err != nil {
			return changed, err
		}
	}
	var add []maps.Route
	for _, r := range plan.Routes {
		if wantRoute[r] {
			add = append(add, r)
		}
	}
	if len(add) > 0 {
		changed = true
		if err := maps.PutRoutes(m, add); err != nil {
			return changed, err
		}
	}
	return changed, nil
}

func equalTunnel(a, b maps.Tunnel) bool {
	keyEq := (a.Key == nil) == (b.Key == nil) && (a.Key == nil || *a.Key == *b.Key)
	a.Key, b.Key = nil, nil
	return keyEq && a == b
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
		return attachTC(dir, pinDecapLink, pinDecapProg, objs.DecapTc, idx, ebpf.AttachTCXIngress, att, want)
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
	// XDP on a veth receives through NAPI only with GRO on or XDP on the
	// peer; without it the ring overflows under TCP load.
	if l.Type() == "veth" && flags == link.XDPDriverMode && att.Flags&maps.AttachGROOwned == 0 {
		on, err := groEnabled(l.Attrs().Name)
		if err != nil {
			return changed, err
		}
		if !on {
			if err := setGRO(l.Attrs().Name, true); err != nil {
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

func attachEncap(dir string, prog *ebpf.Program, idx int, att *maps.Attachment, want string) (bool, error) {
	return attachTC(dir, pinEncapLink, pinEncapProg, prog, idx, ebpf.AttachTCXEgress, att, want)
}

// attachTC attaches with tcx, falling back to clsact + cls_bpf when the
// kernel has no tcx and the user did not insist on it.
func attachTC(dir, linkPin, progPin string, prog *ebpf.Program, idx int, hook ebpf.AttachType, att *maps.Attachment, want string) (bool, error) {
	if att.Tc == bpf.GrebpfTcAttachTC_TCX {
		changed, err := attachLink(filepath.Join(dir, linkPin), prog, func() (link.Link, error) {
			return link.AttachTCX(link.TCXOptions{Interface: idx, Program: prog, Attach: hook})
		})
		if !errors.Is(err, ebpf.ErrNotSupported) {
			if err != nil {
				return false, fmt.Errorf("attach tcx: %w", err)
			}
			return changed, nil
		}
		if want == config.TCX {
			return false, errors.New("this kernel has no tcx (Linux 6.6+): use --tc clsact")
		}
		att.Tc = bpf.GrebpfTcAttachTC_CLSACT
	}
	return attachClsact(filepath.Join(dir, progPin), prog, idx, hook, att)
}

func clsactFilter(idx int, dir ebpf.AttachType) *netlink.BpfFilter {
	parent := uint32(netlink.HANDLE_MIN_EGRESS)
	name := "grebpf_encap"
	if dir == ebpf.AttachTCXIngress {
		parent = netlink.HANDLE_MIN_INGRESS
		name = "grebpf_decap"
	}
	return &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: idx, Parent: parent, Handle: filterHandle,
			Priority: filterPrio, Protocol: unix.ETH_P_ALL,
		},
		Name: name, DirectAction: true,
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

func attachClsact(pin string, prog *ebpf.Program, idx int, dir ebpf.AttachType, att *maps.Attachment) (bool, error) {
	if old, err := ebpf.LoadPinnedProgram(pin, nil); err == nil {
		oi, err := old.Info()
		old.Close()
		if id, ok := oi.ID(); err == nil && ok && sameProgram(id, prog) {
			return false, nil
		}
	}
	has, err := hasClsact(idx)
	if err != nil {
		return false, fmt.Errorf("list qdiscs: %w", err)
	}
	if !has {
		q := &netlink.GenericQdisc{
			QdiscAttrs: netlink.QdiscAttrs{LinkIndex: idx, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
			QdiscType:  "clsact",
		}
		if err := netlink.QdiscAdd(q); err != nil {
			return false, fmt.Errorf("add clsact qdisc: %w", err)
		}
		att.Flags |= maps.AttachClsactOwned
	}
	f := clsactFilter(idx, dir)
	f.Fd = prog.FD()
	if err := netlink.FilterReplace(f); err != nil {
		return false, fmt.Errorf("attach cls_bpf filter: %w", err)
	}
	os.Remove(pin)
	if err := prog.Pin(pin); err != nil {
		return false, fmt.Errorf("pin program: %w", err)
	}
	return true, nil
}
