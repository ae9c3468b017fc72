// Package tunnel holds grebpf's domain types: a GRE tunnel, a route into
// one, and a tunnel's counters. Config produces them, the kernel side and
// the maps consume them; this package imports nothing of grebpf's.
package tunnel

import (
	"fmt"
	"net/netip"
)

// RPFilter is the inner source check on decapsulated packets, with the
// kernel's rp_filter meaning. The values are the data plane's enum
// rp_filter (bpf/include/grebpf.h).
type RPFilter uint8

const (
	RPStrict RPFilter = 0 // the route back to the source uses this tunnel
	RPLoose  RPFilter = 1 // some unicast route back to the source exists
	RPOff    RPFilter = 2
)

var rpNames = []string{"strict", "loose", "off"}

func (r RPFilter) String() string {
	if int(r) < len(rpNames) {
		return rpNames[r]
	}
	return fmt.Sprintf("rp_filter(%d)", r)
}

// ParseRPFilter reads strict, loose or off.
func ParseRPFilter(s string) (RPFilter, error) {
	for i, n := range rpNames {
		if s == n {
			return RPFilter(i), nil
		}
	}
	return 0, fmt.Errorf("rp-filter %q: use strict, loose or off", s)
}

// Tunnel is one GRE tunnel: its interface, its outer endpoints and header
// policy, and its overlay addresses.
type Tunnel struct {
	// Name is the tunnel interface's name, and the tunnel's identity.
	Name   string
	Local  netip.Addr
	Remote netip.Addr
	// IKey is the GRE key (RFC 2890) received packets must carry, OKey the
	// one sent (ip_gre's ikey and okey); nil means none. Tunnels between
	// the same endpoints are told apart by IKey.
	IKey, OKey *uint32
	// TTL of the outer header; 0 copies the inner TTL like ip_gre's "ttl inherit".
	TTL uint8
	// TOSInherit copies the inner DSCP; otherwise TOS is the fixed outer DSCP.
	// ECN always follows the inner header, as ip_gre does.
	TOSInherit bool
	TOS        uint8
	// NoPMTUDisc copies the inner DF bit to the outer header instead of
	// always setting it (ip_gre's nopmtudisc; it needs TTL inherit).
	NoPMTUDisc bool
	// ISeq drops received packets without a sequence number or out of
	// order; OSeq sends sequence numbers (ip_gre's iseq and oseq).
	ISeq, OSeq bool
	// ICsum takes only packets with a GRE checksum, and checks it; OCsum
	// sends one (ip_gre's icsum and ocsum).
	ICsum, OCsum bool
	RPFilter     RPFilter
	// MTU of the tunnel interface: WAN MTU minus the GRE overhead.
	MTU           uint16
	OverlayLocal  netip.Addr
	OverlayRemote netip.Addr

	// What the kernel side gave the tunnel when attach made it.
	Link Link
	// WANNexthop is the outer next hop attach keeps resolved with a managed
	// neighbour entry.
	WANNexthop netip.Addr
}

// Link is where a tunnel lives in the kernel: its interface, the
// interface's veth peer (BPF mode), and the WAN device its outer packets
// leave through. Ifindex is what the data plane knows the tunnel by.
type Link struct {
	Ifindex     uint32
	PeerIfindex uint32
	WANIfindex  uint32
	MAC         [6]byte
	PeerMAC     [6]byte
}

// Overhead is the outer IPv4 + GRE header size for a tunnel.
func (t Tunnel) Overhead() int {
	n := 20 + 4
	if t.OKey != nil {
		n += 4
	}
	if t.OSeq {
		n += 4
	}
	if t.OCsum {
		n += 4
	}
	return n
}

// SameConfig says whether a and b are configured alike, whatever the
// kernel gave them.
func SameConfig(a, b Tunnel) bool {
	keyEq := SameKey(a.IKey, b.IKey) && SameKey(a.OKey, b.OKey)
	a.IKey, b.IKey, a.OKey, b.OKey = nil, nil, nil, nil
	a.Link, b.Link = Link{}, Link{}
	a.WANNexthop, b.WANNexthop = netip.Addr{}, netip.Addr{}
	return keyEq && a == b
}

// SameKey says whether two optional keys are the same (both none, or equal).
func SameKey(a, b *uint32) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

// Route sends an inner prefix into the tunnel named Tunnel.
type Route struct {
	Prefix netip.Prefix
	Tunnel string
}

// Counters are a tunnel's traffic, summed over CPUs. Bytes are inner bytes.
type Counters struct {
	RxPackets uint64 `json:"rx_packets"`
	RxBytes   uint64 `json:"rx_bytes"`
	TxPackets uint64 `json:"tx_packets"`
	TxBytes   uint64 `json:"tx_bytes"`
}
