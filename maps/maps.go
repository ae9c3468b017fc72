// Package maps gives the control plane typed access to the data plane's
// maps: tunnels, decap endpoints, counters and the attachment record.
package maps

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"

	"github.com/grebpf/grebpf/bpf"
	"github.com/grebpf/grebpf/internal/tunnel"
)

// Maps is the set of maps one data plane shares between its programs.
type Maps = bpf.GrebpfMaps

// be32 holds an IPv4 address in network order inside a host-order uint32,
// which is how the C structs carry __be32 fields.
func be32(a netip.Addr) uint32 {
	if !a.IsValid() {
		return 0
	}
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:])
}

func addrOf(v uint32) netip.Addr {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

func keyBE(k uint32) uint32 {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], k)
	return binary.NativeEndian.Uint32(b[:])
}

func keyHost(v uint32) uint32 {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	return binary.BigEndian.Uint32(b[:])
}

func value(t tunnel.Tunnel) bpf.GrebpfTunnel {
	v := bpf.GrebpfTunnel{
		Local:         be32(t.Local),
		Remote:        be32(t.Remote),
		Ttl:           t.TTL,
		Tos:           t.TOS,
		RpFilter:      uint8(t.RPFilter),
		Ifindex:       t.Link.Ifindex,
		WanIfindex:    t.Link.WANIfindex,
		RxIfindex:     t.Link.PeerIfindex,
		OverlayLocal:  be32(t.OverlayLocal),
		OverlayRemote: be32(t.OverlayRemote),
		WanNexthop:    be32(t.WANNexthop),
	}
	if t.OKey != nil {
		v.Flags |= FlagKey
		v.Key = keyBE(*t.OKey)
	}
	if t.TOSInherit {
		v.Flags |= FlagTOSInherit
	}
	if t.NoPMTUDisc {
		v.Flags |= FlagNoPMTUDisc
	}
	if t.OSeq {
		v.Flags |= FlagOSeq
	}
	if t.OCsum {
		v.Flags |= FlagOCsum
	}
	for i := 0; i < len(t.Name) && i < len(v.Name)-1; i++ {
		v.Name[i] = int8(t.Name[i])
	}
	return v
}

func tunnelFrom(v bpf.GrebpfTunnel) tunnel.Tunnel {
	name := make([]byte, 0, len(v.Name))
	for _, c := range v.Name {
		if c == 0 {
			break
		}
		name = append(name, byte(c))
	}
	t := tunnel.Tunnel{
		Name:          string(name),
		Local:         addrOf(v.Local),
		Remote:        addrOf(v.Remote),
		TTL:           v.Ttl,
		TOS:           v.Tos,
		RPFilter:      tunnel.RPFilter(v.RpFilter),
		TOSInherit:    v.Flags&FlagTOSInherit != 0,
		NoPMTUDisc:    v.Flags&FlagNoPMTUDisc != 0,
		OSeq:          v.Flags&FlagOSeq != 0,
		OCsum:         v.Flags&FlagOCsum != 0,
		OverlayLocal:  addrOf(v.OverlayLocal),
		OverlayRemote: addrOf(v.OverlayRemote),
		Link:          tunnel.Link{Ifindex: v.Ifindex, PeerIfindex: v.RxIfindex, WANIfindex: v.WanIfindex},
	}
	if v.WanNexthop != 0 {
		t.WANNexthop = addrOf(v.WanNexthop)
	}
	if v.Flags&FlagKey != 0 {
		k := keyHost(v.Key)
		t.OKey = &k
	}
	return t
}

// endpointKey is how decap (keys t's input key) or an ICMP's quote (keys
// the output key) finds t.
func endpointKey(t tunnel.Tunnel, key *uint32) bpf.GrebpfEndpointKey {
	ek := bpf.GrebpfEndpointKey{Local: be32(t.Local), Remote: be32(t.Remote)}
	if key != nil {
		ek.Key, ek.Keyed = keyBE(*key), 1
	}
	return ek
}

func peerKey(t tunnel.Tunnel) bpf.GrebpfPeerKey {
	return bpf.GrebpfPeerKey{Local: be32(t.Local), Remote: be32(t.Remote)}
}

// Flags of struct tunnel (enum tunnel_flag in grebpf.h).
const (
	FlagKey        = 1 << 0
	FlagTOSInherit = 1 << 1
	FlagNoPMTUDisc = 1 << 2
	FlagOSeq       = 1 << 3
	FlagOCsum      = 1 << 4
)

// PutTunnel writes a tunnel under both of its devices, the decap endpoint
// that accepts its packets, its path, what it sends, and its counters if
// it has none yet (a tunnel rewritten in place keeps them). SetPaths
// later forgets paths and senders no tunnel has any more.
func PutTunnel(m *Maps, t tunnel.Tunnel) error {
	if t.Link.Ifindex == 0 || t.Link.PeerIfindex == 0 {
		return fmt.Errorf("tunnel %s has no interface yet", t.Name)
	}
	v := value(t)
	ep := bpf.GrebpfEndpoint{Ifindex: v.Ifindex, RxIfindex: v.RxIfindex,
		Mac: t.Link.MAC, PeerMac: t.Link.PeerMAC, RpFilter: v.RpFilter}
	if t.ISeq {
		ep.Iseq = 1
	}
	if t.ICsum {
		ep.Icsum = 1
	}
	zero := make([]bpf.GrebpfTunnelCounters, ebpf.MustPossibleCPU())
	err := m.TunnelStats.Update(t.Link.Ifindex, zero, ebpf.UpdateNoExist)
	if err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
		return fmt.Errorf("create counters of tunnel %s: %w", t.Name, err)
	}
	err = m.Seqnos.Update(t.Link.Ifindex, bpf.GrebpfSeqno{}, ebpf.UpdateNoExist)
	if err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
		return fmt.Errorf("create sequence numbers of tunnel %s: %w", t.Name, err)
	}
	// Tunnel first: decap counts and redirects as soon as the endpoint exists.
	for _, dev := range []uint32{t.Link.Ifindex, t.Link.PeerIfindex} {
		if err := m.Tunnels.Put(dev, v); err != nil {
			return fmt.Errorf("write tunnel %s: %w", t.Name, err)
		}
	}
	if err := m.Senders.Put(endpointKey(t, t.OKey), t.Link.Ifindex); err != nil {
		return fmt.Errorf("write what tunnel %s sends: %w", t.Name, err)
	}
	// The path before the endpoint: decap finds the peer, then the key.
	var n uint32
	if err := m.Peers.Lookup(peerKey(t), &n); err != nil {
		if err := m.Peers.Put(peerKey(t), uint32(1)); err != nil {
			return fmt.Errorf("write the path of tunnel %s: %w", t.Name, err)
		}
	}
	if err := m.Endpoints.Put(endpointKey(t, t.IKey), ep); err != nil {
		return fmt.Errorf("write endpoint of tunnel %s: %w", t.Name, err)
	}
	return nil
}

// SetPaths makes the peers and senders maps hold exactly what tunnels
// need, counting the tunnels on each path.
func SetPaths(m *Maps, tunnels []tunnel.Tunnel) error {
	paths := map[bpf.GrebpfPeerKey]uint32{}
	sends := map[bpf.GrebpfEndpointKey]uint32{}
	for _, t := range tunnels {
		paths[peerKey(t)]++
		sends[endpointKey(t, t.OKey)] = t.Link.Ifindex
	}
	var pk bpf.GrebpfPeerKey
	var ek bpf.GrebpfEndpointKey
	var n uint32
	var stalePaths []bpf.GrebpfPeerKey
	var staleSends []bpf.GrebpfEndpointKey
	it := m.Peers.Iterate()
	for it.Next(&pk, &n) {
		if _, ok := paths[pk]; !ok {
			stalePaths = append(stalePaths, pk)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read paths: %w", err)
	}
	it = m.Senders.Iterate()
	for it.Next(&ek, &n) {
		if _, ok := sends[ek]; !ok {
			staleSends = append(staleSends, ek)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read senders: %w", err)
	}
	for k, n := range paths {
		if err := m.Peers.Put(k, n); err != nil {
			return fmt.Errorf("write path: %w", err)
		}
	}
	for k, idx := range sends {
		if err := m.Senders.Put(k, idx); err != nil {
			return fmt.Errorf("write sender: %w", err)
		}
	}
	for _, k := range stalePaths {
		if err := m.Peers.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete path: %w", err)
		}
	}
	for _, k := range staleSends {
		if err := m.Senders.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete sender: %w", err)
		}
	}
	return nil
}

// DeleteEndpoint stops decap accepting t's packets, if the endpoint is
// still t's.
func DeleteEndpoint(m *Maps, t tunnel.Tunnel) error {
	ek := endpointKey(t, t.IKey)
	var ep bpf.GrebpfEndpoint
	if err := m.Endpoints.Lookup(ek, &ep); err == nil && ep.Ifindex == t.Link.Ifindex {
		if err := m.Endpoints.Delete(ek); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete endpoint of tunnel %s: %w", t.Name, err)
		}
	}
	return nil
}

// DeleteTunnel removes a tunnel, its endpoint and its counters; pieces
// already gone are fine.
func DeleteTunnel(m *Maps, t tunnel.Tunnel) error {
	if err := DeleteEndpoint(m, t); err != nil {
		return err
	}
	for _, del := range []struct {
		m   *ebpf.Map
		key uint32
	}{{m.Tunnels, t.Link.Ifindex}, {m.Tunnels, t.Link.PeerIfindex}, {m.TunnelStats, t.Link.Ifindex}, {m.Seqnos, t.Link.Ifindex}} {
		if err := del.m.Delete(del.key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete tunnel %s: %w", t.Name, err)
		}
	}
	return nil
}

// Tunnels lists the configured tunnels, each once (under its interface),
// with their input keys if m has the endpoints map.
func Tunnels(m *Maps) ([]tunnel.Tunnel, error) {
	var (
		out []tunnel.Tunnel
		dev uint32
		v   bpf.GrebpfTunnel
	)
	// The input key is only in the endpoints map's keys. Detach reads
	// tunnels with whatever maps it could open, and needs no keys.
	ikeys := map[uint32]*uint32{}
	iseq, icsum := map[uint32]bool{}, map[uint32]bool{}
	if m.Endpoints != nil {
		var ek bpf.GrebpfEndpointKey
		var ep bpf.GrebpfEndpoint
		eps := m.Endpoints.Iterate()
		for eps.Next(&ek, &ep) {
			if ek.Keyed != 0 {
				k := keyHost(ek.Key)
				ikeys[ep.Ifindex] = &k
			}
			iseq[ep.Ifindex], icsum[ep.Ifindex] = ep.Iseq != 0, ep.Icsum != 0
		}
		if err := eps.Err(); err != nil {
			return nil, fmt.Errorf("read endpoints: %w", err)
		}
	}
	it := m.Tunnels.Iterate()
	for it.Next(&dev, &v) {
		if dev == v.Ifindex {
			t := tunnelFrom(v)
			t.IKey, t.ISeq, t.ICsum = ikeys[dev], iseq[dev], icsum[dev]
			out = append(out, t)
		}
	}
	slices.SortFunc(out, func(a, b tunnel.Tunnel) int { return strings.Compare(a.Name, b.Name) })
	return out, it.Err()
}

// TunnelCounters sums one tunnel's per-CPU counters.
func TunnelCounters(m *Maps, ifindex uint32) (tunnel.Counters, error) {
	var per []bpf.GrebpfTunnelCounters
	if err := m.TunnelStats.Lookup(ifindex, &per); err != nil {
		return tunnel.Counters{}, fmt.Errorf("read counters of tunnel ifindex %d: %w", ifindex, err)
	}
	var c tunnel.Counters
	for _, p := range per {
		c.RxPackets += p.RxPackets
		c.RxBytes += p.RxBytes
		c.TxPackets += p.TxPackets
		c.TxBytes += p.TxBytes
	}
	return c, nil
}

// ReasonCounts sums the per-CPU reason counters; index is the reason.
func ReasonCounts(m *Maps) ([]uint64, error) {
	out := make([]uint64, bpf.GrebpfReasonREASON_MAX)
	for r := range out {
		var per []uint64
		if err := m.ReasonStats.Lookup(uint32(r), &per); err != nil {
			return nil, fmt.Errorf("read reason counters: %w", err)
		}
		for _, n := range per {
			out[r] += n
		}
	}
	return out, nil
}

// Attachment says where the programs are attached; see struct attachment.
type Attachment = bpf.GrebpfAttachment

// Attachment flags (enum attachment_flag in grebpf.h).
const (
	AttachXDPGeneric  = 1 << 0
	AttachClsactOwned = 1 << 1
	AttachGROOwned    = 1 << 2
	AttachFastPath    = 1 << 3
	AttachEncapEgress = 1 << 4
	// AttachAcceptSourceRoute: the WAN device accepts source-routed
	// packets, so decap does too.
	AttachAcceptSourceRoute = 1 << 5
)

// ReadAttachment returns the attachment record; Ifindex 0 means none.
func ReadAttachment(m *Maps) (Attachment, error) {
	var a Attachment
	err := m.Attachments.Lookup(uint32(0), &a)
	return a, err
}

// WriteAttachment stores the attachment record.
func WriteAttachment(m *Maps, a Attachment) error {
	return m.Attachments.Put(uint32(0), a)
}

// SetICMPSources makes the iface_addrs map hold exactly srcs: the address
// ICMP errors leave from, per device ifindex.
func SetICMPSources(m *Maps, srcs map[uint32]netip.Addr) error {
	if len(srcs) > int(m.IfaceAddrs.MaxEntries()) {
		return fmt.Errorf("%d devices have IPv4 addresses; grebpf answers ICMP through at most %d: split them over namespaces",
			len(srcs), m.IfaceAddrs.MaxEntries())
	}
	var k, v uint32
	var stale []uint32
	it := m.IfaceAddrs.Iterate()
	for it.Next(&k, &v) {
		if a, ok := srcs[k]; !ok || be32(a) != v {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read ICMP sources: %w", err)
	}
	for _, k := range stale {
		if err := m.IfaceAddrs.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete ICMP source of ifindex %d: %w", k, err)
		}
	}
	for k, a := range srcs {
		if err := m.IfaceAddrs.Put(k, be32(a)); err != nil {
			return fmt.Errorf("write ICMP source of ifindex %d: %w", k, err)
		}
	}
	return nil
}

// PathMTU is what ICMP taught the data plane about the path to t's
// remote: the path MTU and how long it holds; ok is false when nothing
// holds now. now is CLOCK_MONOTONIC, the programs' clock.
func PathMTU(m *Maps, t tunnel.Tunnel, now time.Duration) (mtu uint32, left time.Duration, ok bool) {
	var v bpf.GrebpfPathMtu
	if err := m.PathMtus.Lookup(peerKey(t), &v); err != nil || time.Duration(v.Expires) <= now {
		return 0, 0, false
	}
	return v.Mtu, time.Duration(v.Expires) - now, true
}
