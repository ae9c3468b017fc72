package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

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
	// Recovered says what attach did about an attach or detach that was
	// killed before it finished, if there was one.
	Recovered string
	// FastPath lists the LAN devices with the XDP fast path.
	FastPath []string
}

// cls_bpf filter identity for the clsact path: a priority and handle of our
// own so that we replace and delete only our filter.
const (
	filterPrio   = 0xb1
	filterHandle = 0x6772
)

// prepared is a router checked against the namespace and the data plane
// already there, before anything changes.
type prepared struct {
	ns, dir     string
	wan         netlink.Link
	plan        config.Plan
	att         maps.Attachment // attach points: chosen, or those in place
	fresh       bool            // nothing of grebpf's is attached yet
	prevTunnels []tunnel.Tunnel // what the maps hold now
	rec         record          // what a commit records
}

// prepare checks r against the namespace without changing anything: the
// devices, the addresses and routes it would take, the capacity of the
// maps, a change of attach mode that needs a detach.
func prepare(ns string, r config.Router) (p prepared, err error) {
	p.ns = ns
	if p.wan, p.plan, err = resolve(ns, r); err != nil {
		return p, err
	}
	if max := MaxTunnels(); len(p.plan.Tunnels) > max {
		return p, fmt.Errorf("config has %d tunnels; grebpf holds at most %d per network namespace: split them over namespaces", len(p.plan.Tunnels), max)
	}
	idx := p.wan.Attrs().Index
	p.att = chooseAttachment(p.plan, p.wan)
	p.fresh = !Attached(ns)
	if !p.fresh {
		d, err := Open(ns)
		if err != nil {
			return p, err
		}
		prevAtt, err := maps.ReadAttachment(&d.Maps)
		if err == nil {
			p.prevTunnels, err = maps.Tunnels(&d.Maps)
		}
		d.Close()
		if err != nil {
			return p, err
		}
		if prevAtt.Ifindex != uint32(idx) {
			return p, fmt.Errorf("grebpf is already attached to another device (ifindex %d) in %s: run grebpf detach first", prevAtt.Ifindex, ns)
		}
		modeFlags := uint32(maps.AttachXDPGeneric | maps.AttachFastPath | maps.AttachEncapEgress)
		if p.att.Decap != prevAtt.Decap || p.att.Flags&modeFlags != prevAtt.Flags&modeFlags ||
			(p.plan.TC != config.TCAuto && tcName(prevAtt.Tc) != p.plan.TC) {
			return p, fmt.Errorf("grebpf is attached with decap %s, tc %s: run grebpf detach first to change the attach mode",
				decapName(prevAtt.Decap), tcName(prevAtt.Tc))
		}
		p.att = prevAtt
	}
	p.att.Flags &^= maps.AttachAcceptSourceRoute
	if AcceptsSourceRoutes(p.wan.Attrs().Name) {
		p.att.Flags |= maps.AttachAcceptSourceRoute
	}
	if len(p.plan.FastPath) > 0 {
		targets := []netlink.Link{p.wan}
		for _, name := range p.plan.FastPath {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return p, err
			}
			targets = append(targets, l)
		}
		if err := checkRedirectTargets(targets); err != nil {
			return p, err
		}
	}
	own, err := routing.OwnInterfaces()
	if err != nil {
		return p, err
	}
	if err := routing.Check(p.wan, p.plan.Tunnels, p.plan.Routes, own...); err != nil {
		return p, err
	}
	p.rec.Router = r
	for _, t := range p.plan.Tunnels {
		nh, err := routing.WANNexthop(p.wan, t)
		if err != nil {
			return p, err
		}
		if !slices.Contains(p.rec.Nexthops, nh) {
			p.rec.Nexthops = append(p.rec.Nexthops, nh)
		}
	}
	root, err := PinRoot()
	if err != nil {
		return p, err
	}
	p.dir = filepath.Join(root, ns)
	return p, nil
}

// AcceptsSourceRoutes says whether the kernel keeps source-routed
// packets arriving on dev: accept_source_route on for dev and for all.
func AcceptsSourceRoutes(dev string) bool {
	for _, d := range []string{"all", dev} {
		b, err := os.ReadFile("/proc/sys/net/ipv4/conf/" + d + "/accept_source_route")
		if err != nil || strings.TrimSpace(string(b)) == "0" {
			return false
		}
	}
	return true
}

// MaxTunnels is how many tunnels the maps hold, from the programs' own
// map definitions.
func MaxTunnels() int {
	spec, err := bpf.LoadGrebpf()
	if err != nil {
		return 0
	}
	return int(spec.Maps[bpf.GrebpfMapEndpoints].MaxEntries)
}

// attachBPF is Attach for the BPF backend, with the namespace's lock
// held: one transaction. It recovers from an attach or detach that was
// killed half-way, checks everything, journals what it is about to
// apply, applies it, and on any failure before the commit undoes it:
// programs it replaced are put back and the previous configuration is
// applied again (a fresh attach is detached). The result is the new state
// or the old one, traffic included.
func attachBPF(ns string, r config.Router) (rep Report, err error) {
	x := &txn{}
	defer x.close()
	recovered, err := recoverInterrupted(x, ns)
	rep.Recovered = recovered
	if err != nil {
		return rep, err
	}
	p, err := prepare(ns, r)
	if err != nil {
		return rep, err
	}
	prev, hasPrev, err := readRecord(ns)
	if err != nil {
		return rep, err
	}
	if p.fresh {
		hasPrev = false
		if err := removeFile(recordPath(ns)); err != nil {
			return rep, err
		}
	}
	if err := writeJSON(journalPath(ns), journal{Op: opAttach, PID: os.Getpid(), Next: p.rec}); err != nil {
		return rep, err
	}
	rep, committed, err := apply(x, p, func() error { return writeJSON(recordPath(ns), p.rec) })
	rep.Recovered = recovered
	switch {
	case err == nil:
		return rep, removeFile(journalPath(ns))
	case committed:
		return rep, fmt.Errorf("attached, but removing what the config no longer has failed: %w: run grebpf attach again to finish", err)
	}
	if uerr := undo(x, p, prev, hasPrev); uerr != nil {
		return rep, fmt.Errorf("%w (and undoing it failed: %v: run grebpf attach again, or grebpf detach)", err, uerr)
	}
	return rep, err
}

// undo takes back an attach that failed before its commit.
func undo(x *txn, p prepared, prev record, hasPrev bool) error {
	perr := x.revertPrograms()
	var err error
	switch {
	case p.fresh:
		err = detachAll(x, p.ns, p.rec)
	case !hasPrev:
		return errors.New("the data plane was attached without a record of its configuration (by an older grebpf?)")
	default:
		err = restore(x, p.ns, prev)
		if err == nil {
			err = routing.ForgetNeighbours(p.wan.Attrs().Index, p.rec.Nexthops, prev.Nexthops)
		}
	}
	if err = errors.Join(perr, err); err != nil {
		return err
	}
	return removeFile(journalPath(p.ns))
}

// restore applies a committed record again, leaving attached programs as
// they are.
func restore(x *txn, ns string, rec record) error {
	x.restoring = true
	defer func() { x.restoring = false }()
	p, err := prepare(ns, rec.Router)
	if err == nil {
		_, _, err = apply(x, p, nil)
	}
	return err
}

// recoverInterrupted finishes the work of an attach or detach that was
// killed: an attach is rolled back to the last committed record (which
// is the attach's own once it committed), anything else is detached. It
// says what it did, or "" when there was nothing to recover.
func recoverInterrupted(x *txn, ns string) (string, error) {
	j, ok, err := readJournal(ns)
	if err != nil || !ok {
		return "", err
	}
	rec, hasRec, err := readRecord(ns)
	if err != nil {
		return "", err
	}
	var what string
	if j.Op == opAttach && hasRec && Attached(ns) {
		err = restore(x, ns, rec)
		if err == nil {
			if wan, lerr := netlink.LinkByName(rec.Router.Device); lerr == nil {
				err = routing.ForgetNeighbours(wan.Attrs().Index, j.Next.Nexthops, rec.Nexthops)
			}
		}
		what = fmt.Sprintf("recovered from an interrupted attach (pid %d): back to the last committed configuration", j.PID)
	} else {
		err = detachAll(x, ns, j.Next, rec)
		if err == nil {
			err = removeFile(recordPath(ns))
		}
		what = fmt.Sprintf("recovered from an interrupted %s (pid %d): detached", j.Op, j.PID)
	}
	if err != nil {
		return "", fmt.Errorf("recover from an interrupted %s (pid %d): %w: run grebpf detach", j.Op, j.PID, err)
	}
	return what, removeFile(journalPath(ns))
}

// apply makes the data plane what p plans, in an order where each step
// only starts traffic the previous ones can handle: the attachment record
// (so that detach can undo whatever follows), decap (it passes everything
// until a tunnel's endpoint exists), each tunnel's interface, map entries
// and encap, the fast path, the routes that send traffic into the
// tunnels. Then commit, then what p no longer has is removed.
func apply(x *txn, p prepared, commit func() error) (rep Report, committed bool, err error) {
	rep.Device = p.plan.Device
	if err := x.at("load"); err != nil {
		return rep, false, err
	}
	objs, err := load(p.dir)
	if err != nil {
		return rep, false, err
	}
	defer objs.Close()
	m := &objs.GrebpfMaps
	att := p.att
	if att.Tc == 0 {
		att.Tc = bpf.GrebpfTcAttachTC_TCX
		if p.plan.TC == config.TCClsact {
			att.Tc = bpf.GrebpfTcAttachTC_CLSACT
		}
	}
	if err := x.at("record attachment"); err != nil {
		return rep, false, err
	}
	if err = maps.WriteAttachment(m, att); err != nil {
		return rep, false, err
	}
	if err := x.at("decap"); err != nil {
		return rep, false, err
	}
	c, err := attachDecap(x, p.dir, objs, p.wan, &att, p.plan.TC)
	if err != nil {
		return rep, false, err
	}
	rep.Changed = p.fresh || c
	if err = maps.WriteAttachment(m, att); err != nil {
		return rep, false, err
	}
	tunnels, c, err := makeTunnels(x, p.dir, objs, p.wan, &att, p.plan, p.prevTunnels)
	if err != nil {
		return rep, false, err
	}
	rep.Changed = rep.Changed || c
	// After the tunnel interfaces, whose IPv6 overlay addresses answer
	// ICMPv6 for senders reached through them.
	if err = fillICMPSources(m); err != nil {
		return rep, false, err
	}
	if err := x.at("fast path"); err != nil {
		return rep, false, err
	}
	c, err = attachFastPath(x, p.dir, objs.FastpathLan, p.plan.FastPath, att.Flags)
	if err != nil {
		return rep, false, err
	}
	rep.Changed = rep.Changed || c
	rep.FastPath = p.plan.FastPath
	if err := x.at("routes"); err != nil {
		return rep, false, err
	}
	before, err := routing.Ours(tunnels)
	if err != nil {
		return rep, false, err
	}
	if err = routing.Routes(tunnels, p.plan.Routes); err != nil {
		return rep, false, err
	}
	after, err := routing.Ours(tunnels)
	if err != nil {
		return rep, false, err
	}
	rep.Changed = rep.Changed || !sameRoutes(before, after)
	if commit != nil {
		if err := x.at(StepCommit); err != nil {
			return rep, false, err
		}
		if err := commit(); err != nil {
			return rep, false, err
		}
	}
	c, err = removeGone(x, p.dir, m, p.wan, p.plan, tunnels, p.prevTunnels)
	rep.Changed = rep.Changed || c
	if err == nil {
		err = maps.SetPaths(m, tunnels)
	}
	if err != nil {
		return rep, true, err
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
	return rep, true, nil
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

// makeTunnels makes each planned tunnel's interface, map entries and
// encap attachment. It returns the tunnels as the kernel now has them.
// Tunnels no longer planned stay until removeGone, after the commit.
func makeTunnels(x *txn, dir string, objs *bpf.GrebpfObjects, wan netlink.Link, att *maps.Attachment, plan config.Plan, prev []tunnel.Tunnel) ([]tunnel.Tunnel, bool, error) {
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
	if err := x.at("neighbours"); err != nil {
		return nil, false, err
	}
	tunnels, changed, err := routing.KeepResolved(h, wan, plan.Tunnels)
	if err != nil {
		return nil, false, err
	}
	for i, t := range tunnels {
		if err := x.at("interface " + t.Name); err != nil {
			return nil, changed, err
		}
		if t, err = routing.Interface(h, wan, t); err != nil {
			return nil, changed, err
		}
		tunnels[i] = t
		if err := x.at("maps " + t.Name); err != nil {
			return nil, changed, err
		}
		p, had := prevByName[t.Name]
		if had && p.Link.Ifindex != t.Link.Ifindex {
			// The interface was made anew (someone deleted it): its old
			// entries name a device that is gone.
			if err := maps.DeleteTunnel(m, p); err != nil {
				return nil, changed, err
			}
			had = false
		}
		if had && (p.Local != t.Local || p.Remote != t.Remote || !tunnel.SameKey(p.IKey, t.IKey)) {
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
		if err := x.at("encap " + t.Name); err != nil {
			return nil, changed, err
		}
		c, err := attachEncap(x, encapPin(dir, t.Link.Ifindex), objs.EncapTc, t.Link, att, plan.TC)
		if err != nil {
			return nil, changed, fmt.Errorf("tunnel %s: %w", t.Name, err)
		}
		changed = changed || c
	}
	return tunnels, changed, nil
}

// removeGone takes away what the plan no longer has: tunnels (interface
// first, so no route points at a tunnel without map entries), interfaces
// of grebpf's that no tunnel owns (left by an attach that was undone or
// killed), their next hops and pins, fast path attachments.
func removeGone(x *txn, dir string, m *bpf.GrebpfMaps, wan netlink.Link, plan config.Plan, tunnels, prev []tunnel.Tunnel) (bool, error) {
	changed := false
	keep := map[string]bool{}
	for _, t := range tunnels {
		keep[t.Name], keep[routing.PeerName(t.Name)] = true, true
	}
	var gone []tunnel.Tunnel
	for _, t := range prev {
		if !keep[t.Name] {
			gone = append(gone, t)
		}
	}
	for _, t := range gone {
		if err := x.at("remove " + t.Name); err != nil {
			return changed, err
		}
		changed = true
		if err := routing.DeleteInterface(t.Link.Ifindex); err != nil {
			return changed, err
		}
		if err := maps.DeleteTunnel(m, t); err != nil {
			return changed, err
		}
	}
	if err := x.at("remove stray interfaces"); err != nil {
		return changed, err
	}
	own, err := routing.OwnInterfaces()
	if err != nil {
		return changed, err
	}
	for _, idx := range own {
		l, err := netlink.LinkByIndex(idx)
		if err != nil {
			continue // its veth peer went with the other end
		}
		if !keep[l.Attrs().Name] {
			changed = true
			if err := routing.DeleteInterface(uint32(idx)); err != nil {
				return changed, err
			}
		}
	}
	var goneNH, keepNH []netip.Addr
	for _, t := range gone {
		goneNH = append(goneNH, t.WANNexthop)
	}
	for _, t := range tunnels {
		keepNH = append(keepNH, t.WANNexthop)
	}
	if err := routing.ForgetNeighbours(wan.Attrs().Index, goneNH, keepNH); err != nil {
		return changed, err
	}
	// Encap pins of interfaces that are gone (deleted by hand, or above).
	want := map[string]bool{}
	for _, t := range tunnels {
		want[encapPin(dir, t.Link.Ifindex)] = true
	}
	pins, _ := filepath.Glob(filepath.Join(dir, pinEncapPrefix+"*"))
	for _, p := range pins {
		if !want[p] {
			changed = true
			os.Remove(p)
		}
	}
	if err := x.at("remove fast path"); err != nil {
		return changed, err
	}
	c, err := detachFastPath(dir, plan.FastPath)
	return changed || c, err
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
// pinned already, updates it to prog if the program differs, keeping the
// old program so that an undone attach can put it back. Restoring leaves
// a pinned link as it is.
func attachLink(x *txn, pin string, prog *ebpf.Program, attach func() (link.Link, error)) (changed bool, err error) {
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		defer l.Close()
		info, err := l.Info()
		if err != nil {
			return false, fmt.Errorf("inspect pinned link %s: %w", pin, err)
		}
		if x.restoring || sameProgram(info.Program, prog) {
			return false, nil
		}
		old, oldErr := ebpf.NewProgramFromID(info.Program)
		if err := l.Update(prog); err != nil {
			if oldErr == nil {
				old.Close()
			}
			return false, fmt.Errorf("upgrade program of %s: %w", pin, err)
		}
		if oldErr == nil {
			x.onUndo(func() error {
				l, err := link.LoadPinnedLink(pin, nil)
				if err != nil {
					return nil // the link went with what it was attached to
				}
				defer l.Close()
				return l.Update(old)
			}, old)
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

// markOwned records in the attachment, before the change is made, that
// grebpf is about to turn something of the WAN device's on, so that a
// detach after a crash at any point turns it off again.
func markOwned(m *bpf.GrebpfMaps, att *maps.Attachment, flag uint32) func() error {
	return func() error {
		att.Flags |= flag
		return maps.WriteAttachment(m, *att)
	}
}

func attachDecap(x *txn, dir string, objs *bpf.GrebpfObjects, l netlink.Link, att *maps.Attachment, want string) (bool, error) {
	idx := int(att.Ifindex)
	m := &objs.GrebpfMaps
	ownClsact := markOwned(m, att, maps.AttachClsactOwned)
	if att.Decap == bpf.GrebpfDecapAttachDECAP_TC {
		return attachTC(x, filepath.Join(dir, pinDecapLink), filepath.Join(dir, pinDecapProg), objs.DecapTc, idx, ebpf.AttachTCXIngress, &att.Tc, want, ownClsact)
	}
	flags := xdpMode(att.Flags)
	prog := objs.DecapXdp
	if att.Flags&maps.AttachFastPath != 0 {
		prog = objs.FastpathWan
	}
	changed, err := attachLink(x, filepath.Join(dir, pinDecapLink), prog, func() (link.Link, error) {
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
	c, err := attachTC(x, filepath.Join(dir, pinDecapLink+"_tc"), filepath.Join(dir, pinDecapProg), objs.ToTunnelTc, idx, ebpf.AttachTCXIngress, &att.Tc, want, ownClsact)
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
			if err := markOwned(m, att, maps.AttachGROOwned)(); err != nil {
				return changed, err
			}
			if err := routing.SetGRO(l.Attrs().Name, true); err != nil {
				return changed, fmt.Errorf("turn GRO on for XDP on veth %s: %w", l.Attrs().Name, err)
			}
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

// attachFastPath puts fastpath_lan on each LAN device.
func attachFastPath(x *txn, dir string, prog *ebpf.Program, devs []string, attachFlags uint32) (changed bool, err error) {
	for _, name := range devs {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return changed, fmt.Errorf("no such interface %q: check `ip link`", name)
		}
		c, err := attachLink(x, fastPathPin(dir, l.Attrs().Index), prog, func() (link.Link, error) {
			return link.AttachXDP(link.XDPOptions{Program: prog, Interface: l.Attrs().Index, Flags: xdpMode(attachFlags)})
		})
		if err != nil {
			return changed, fmt.Errorf("attach the XDP fast path to %s: %w", name, err)
		}
		changed = changed || c
	}
	return changed, nil
}

// detachFastPath takes the fast path off devices not in devs.
func detachFastPath(dir string, devs []string) (changed bool, err error) {
	want := map[string]bool{}
	for _, name := range devs {
		if l, err := netlink.LinkByName(name); err == nil {
			want[fastPathPin(dir, l.Attrs().Index)] = true
		}
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
// them: it goes with them.
func attachEncap(x *txn, pin string, prog *ebpf.Program, l tunnel.Link, att *maps.Attachment, want string) (bool, error) {
	dev, hook := int(l.PeerIfindex), ebpf.AttachTCXIngress
	if att.Flags&maps.AttachEncapEgress != 0 {
		dev, hook = int(l.Ifindex), ebpf.AttachTCXEgress
	}
	return attachTC(x, pin, pin, prog, dev, hook, &att.Tc, want, nil)
}

// attachTC attaches with tcx, falling back to clsact + cls_bpf when the
// kernel has no tcx and the user did not insist on it (*tc says which was
// used). ownQdisc, if not nil, runs before it adds a clsact qdisc.
func attachTC(x *txn, linkPin, progPin string, prog *ebpf.Program, idx int, hook ebpf.AttachType, tc *bpf.GrebpfTcAttach, want string, ownQdisc func() error) (changed bool, err error) {
	if *tc == bpf.GrebpfTcAttachTC_TCX {
		changed, err := attachLink(x, linkPin, prog, func() (link.Link, error) {
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
		*tc = bpf.GrebpfTcAttachTC_CLSACT
	}
	return attachClsact(x, progPin, prog, idx, hook, ownQdisc)
}

// ClsactQdisc is the clsact qdisc of device idx, as added and deleted.
func ClsactQdisc(idx int) *netlink.GenericQdisc {
	return &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: idx, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
}

// ClsactFilter is grebpf's cls_bpf filter on device idx's ingress or
// egress (dir), without its program.
func ClsactFilter(idx int, dir ebpf.AttachType) *netlink.BpfFilter {
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

// replaceFilter points our cls_bpf filter at prog and pins prog, which
// is how a later attach finds what the filter runs.
func replaceFilter(pin string, prog *ebpf.Program, idx int, dir ebpf.AttachType) error {
	f := ClsactFilter(idx, dir)
	f.Fd = prog.FD()
	if err := netlink.FilterReplace(f); err != nil {
		return fmt.Errorf("attach cls_bpf filter: %w", err)
	}
	// Pinned through a duplicate: pinning one program object at a second
	// path moves its first pin (every tunnel's filter runs the same encap).
	dup, err := prog.Clone()
	if err != nil {
		return fmt.Errorf("pin program: %w", err)
	}
	defer dup.Close()
	os.Remove(pin)
	if err := dup.Pin(pin); err != nil {
		return fmt.Errorf("pin program: %w", err)
	}
	return nil
}

func attachClsact(x *txn, pin string, prog *ebpf.Program, idx int, dir ebpf.AttachType, ownQdisc func() error) (changed bool, err error) {
	var old *ebpf.Program
	if p, err := ebpf.LoadPinnedProgram(pin, nil); err == nil {
		oi, err := p.Info()
		if id, ok := oi.ID(); x.restoring || err == nil && ok && sameProgram(id, prog) {
			p.Close()
			return false, nil
		}
		old = p
	}
	has, err := hasClsact(idx)
	if err != nil {
		return false, fmt.Errorf("list qdiscs: %w", err)
	}
	if !has {
		if ownQdisc != nil {
			if err := ownQdisc(); err != nil {
				return false, err
			}
		}
		if err := netlink.QdiscAdd(ClsactQdisc(idx)); err != nil {
			return false, fmt.Errorf("add clsact qdisc: %w", err)
		}
	}
	if err := replaceFilter(pin, prog, idx, dir); err != nil {
		if old != nil {
			old.Close()
		}
		return false, err
	}
	if old != nil {
		x.onUndo(func() error { return replaceFilter(pin, old, idx, dir) }, old)
	}
	return true, nil
}
