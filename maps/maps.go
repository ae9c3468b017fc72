// Package maps gives the control plane typed access to the data plane's
// maps: tunnels, routes, decap endpoints, counters and the attachment record.
package maps

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/grebpf/grebpf/bpf"
)

// Maps is the set of maps one data plane shares between its programs.
type Maps = bpf.GrebpfMaps

// Tunnel is one GRE tunnel as the data plane and the control plane see it.
type Tunnel struct {
	ID     uint32
	Name   string
	Local  netip.Addr
	Remote netip.Addr
	// Key is the GRE key (RFC 2890); nil means no key is sent or accepted.
	Key *uint32
	// TTL of the outer header; 0 copies the inner TTL like ip_gre's "ttl inherit".
	TTL uint8
	// TOSInherit copies the inner DSCP; otherwise TOS is the fixed outer DSCP.
	// ECN always follows the inner header, as ip_gre does.
	TOSInherit bool
	TOS        uint8
	// MTU of the routes through the tunnel: WAN MTU minus the GRE overhead.
	MTU           uint16
	OverlayLocal  netip.Addr
	OverlayRemote netip.Addr
	// AddrOwned records that attach added OverlayLocal, so detach removes it.
	AddrOwned bool
	// WANNexthop is the outer next hop attach keeps resolved with a managed
	// neighbour entry; zero until attach has set it.
	WANNexthop netip.Addr
}

// Counters are a tunnel's traffic, summed over CPUs. Bytes are inner bytes.
type Counters struct {
	RxPackets uint64 `json:"rx_packets"`
	RxBytes   uint64 `json:"rx_bytes"`
	TxPackets uint64 `json:"tx_packets"`
	TxBytes   uint64 `json:"tx_bytes"`
}

// Overhead is the outer IPv4 + GRE header size for a tunnel.
func (t Tunnel) Overhead() int {
	if t.Key != nil {
		return 20 + 8
	}
	return 20 + 4
}

// be32 holds an IPv4 address in network order inside a host-order uint32,
// which is how the C structs carry __be32 fields.
func be32(a netip.Addr) uint32 {
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

func (t Tunnel) value() bpf.GrebpfTunnel {
	v := bpf.GrebpfTunnel{
		Local:         be32(t.Local),
		Remote:        be32(t.Remote),
		Ttl:           t.TTL,
		Tos:           t.TOS,
		Mtu:           t.MTU,
		OverlayLocal:  be32(t.OverlayLocal),
		OverlayRemote: be32(t.OverlayRemote),
	}
	if t.WANNexthop.IsValid() {
		v.WanNexthop = be32(t.WANNexthop)
	}
	if t.Key != nil {
		v.Flags |= FlagKey
		v.Key = keyBE(*t.Key)
	}
	if t.TOSInherit {
		v.Flags |= FlagTOSInherit
	}
	if t.AddrOwned {
		v.Flags |= FlagAddrOwned
	}
	for i := 0; i < len(t.Name) && i < len(v.Name)-1; i++ {
		v.Name[i] = int8(t.Name[i])
	}
	return v
}

func tunnelFrom(id uint32, v bpf.GrebpfTunnel) Tunnel {
	name := make([]byte, 0, len(v.Name))
	for _, c := range v.Name {
		if c == 0 {
			break
		}
		name = append(name, byte(c))
	}
	t := Tunnel{
		ID:            id,
		Name:          string(name),
		Local:         addrOf(v.Local),
		Remote:        addrOf(v.Remote),
		TTL:           v.Ttl,
		TOS:           v.Tos,
		MTU:           v.Mtu,
		TOSInherit:    v.Flags&FlagTOSInherit != 0,
		AddrOwned:     v.Flags&FlagAddrOwned != 0,
		OverlayLocal:  addrOf(v.OverlayLocal),
		OverlayRemote: addrOf(v.OverlayRemote),
	}
	if v.WanNexthop != 0 {
		t.WANNexthop = addrOf(v.WanNexthop)
	}
	if v.Flags&FlagKey != 0 {
		k := keyHost(v.Key)
		t.Key = &k
	}
	return t
}

// Flags of struct tunnel and struct endpoint (enum tunnel_flag in grebpf.h).
const (
	FlagKey        = 1 << 0
	FlagTOSInherit = 1 << 1
	FlagAddrOwned  = 1 << 2
)

// PutTunnel writes a tunnel and the decap endpoint that accepts its packets.
func PutTunnel(m *Maps, t Tunnel) error {
	if t.ID == 0 || t.ID >= m.Tunnels.MaxEntries() {
		return fmt.Errorf("tunnel id %d out of range 1..%d", t.ID, m.Tunnels.MaxEntries()-1)
	}
	v := t.value()
	ek := bpf.GrebpfEndpointKey{Local: v.Local, Remote: v.Remote}
	ep := bpf.GrebpfEndpoint{TunnelId: t.ID, Flags: v.Flags & FlagKey, Key: v.Key}
	// Tunnel first: decap may count against the id as soon as the endpoint exists.
	if err := m.Tunnels.Put(t.ID, v); err != nil {
		return fmt.Errorf("write tunnel %s: %w", t.Name, err)
	}
	if err := m.Endpoints.Put(ek, ep); err != nil {
		return fmt.Errorf("write endpoint of tunnel %s: %w", t.Name, err)
	}
	return nil
}

// DeleteTunnel removes a tunnel, its endpoint and its counters.
func DeleteTunnel(m *Maps, t Tunnel) error {
	ek := bpf.GrebpfEndpointKey{Local: be32(t.Local), Remote: be32(t.Remote)}
	var ep bpf.GrebpfEndpoint
	if err := m.Endpoints.Lookup(ek, &ep); err == nil && ep.TunnelId == t.ID {
		if err := m.Endpoints.Delete(ek); err != nil {
			return fmt.Errorf("delete endpoint of tunnel %s: %w", t.Name, err)
		}
	}
	if err := m.Tunnels.Put(t.ID, bpf.GrebpfTunnel{}); err != nil {
		return fmt.Errorf("delete tunnel %s: %w", t.Name, err)
	}
	zero := make([]bpf.GrebpfTunnelCounters, ebpf.MustPossibleCPU())
	return m.TunnelStats.Put(t.ID, zero)
}

// Tunnels lists the configured tunnels (array slots with a remote set).
func Tunnels(m *Maps) ([]Tunnel, error) {
	var (
		out []Tunnel
		id  uint32
		v   bpf.GrebpfTunnel
	)
	it := m.Tunnels.Iterate()
	for it.Next(&id, &v) {
		if v.Remote != 0 {
			out = append(out, tunnelFrom(id, v))
		}
	}
	return out, it.Err()
}

// Route maps an inner destination prefix to a tunnel.
type Route struct {
	Prefix   netip.Prefix
	TunnelID uint32
}

func routeKey(p netip.Prefix) bpf.GrebpfRouteKey {
	return bpf.GrebpfRouteKey{Prefixlen: uint32(p.Bits()), Addr: be32(p.Masked().Addr())}
}

// PutRoute sends packets for prefix into tunnel id.
func PutRoute(m *Maps, p netip.Prefix, id uint32) error {
	return PutRoutes(m, []Route{{Prefix: p, TunnelID: id}})
}

// PutRoutes writes routes with batch updates, one syscall per few
// thousand routes instead of one each (100,000 routes: 450 ms → see
// README), or one by one where the kernel has no batch ops on LPM tries.
func PutRoutes(m *Maps, routes []Route) error {
	keys := make([]bpf.GrebpfRouteKey, len(routes))
	ids := make([]uint32, len(routes))
	for i, r := range routes {
		keys[i], ids[i] = routeKey(r.Prefix), r.TunnelID
	}
	const chunk = 4096
	for len(keys) > 0 {
		n := min(chunk, len(keys))
		_, err := m.Routes.BatchUpdate(keys[:n], ids[:n], nil)
		if errors.Is(err, ebpf.ErrNotSupported) {
			for i := range n {
				if err = m.Routes.Put(keys[i], ids[i]); err != nil {
					break
				}
			}
		}
		if err != nil {
			return fmt.Errorf("write routes: %w", err)
		}
		keys, ids = keys[n:], ids[n:]
	}
	return nil
}

// DeleteRoute removes a prefix; a missing one is not an error.
func DeleteRoute(m *Maps, p netip.Prefix) error {
	err := m.Routes.Delete(routeKey(p))
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete route %s: %w", p, err)
	}
	return nil
}

// Routes lists the route map: in batches where the kernel can, else one
// key at a time.
func Routes(m *Maps) ([]Route, error) {
	var (
		out    []Route
		cursor ebpf.MapBatchCursor
		keys   = make([]bpf.GrebpfRouteKey, 4096)
		ids    = make([]uint32, 4096)
	)
	add := func(k bpf.GrebpfRouteKey, id uint32) {
		out = append(out, Route{Prefix: netip.PrefixFrom(addrOf(k.Addr), int(k.Prefixlen)), TunnelID: id})
	}
	for {
		n, err := m.Routes.BatchLookup(&cursor, keys, ids, nil)
		for i := range n {
			add(keys[i], ids[i])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return out, nil
		}
		if errors.Is(err, ebpf.ErrNotSupported) && len(out) == 0 {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read routes: %w", err)
		}
	}
	var (
		k  bpf.GrebpfRouteKey
		id uint32
	)
	it := m.Routes.Iterate()
	for it.Next(&k, &id) {
		add(k, id)
	}
	return out, it.Err()
}

// TunnelCounters sums one tunnel's per-CPU counters.
func TunnelCounters(m *Maps, id uint32) (Counters, error) {
	var per []bpf.GrebpfTunnelCounters
	if err := m.TunnelStats.Lookup(id, &per); err != nil {
		return Counters{}, fmt.Errorf("read counters of tunnel %d: %w", id, err)
	}
	var c Counters
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
