package maps_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"

	"github.com/grebpf/grebpf/bpf"
	"github.com/grebpf/grebpf/internal/testutil"
	"github.com/grebpf/grebpf/internal/tunnel"
	"github.com/grebpf/grebpf/maps"
)

// The Go names of reasons must follow enum reason in grebpf.h, read from
// the compiled object's BTF.
func TestReasonNamesFollowC(t *testing.T) {
	spec, err := bpf.LoadGrebpf()
	if err != nil {
		t.Fatal(err)
	}
	var enum *btf.Enum
	if err := spec.Types.TypeByName("reason", &enum); err != nil {
		t.Fatal(err)
	}
	for _, v := range enum.Values {
		if v.Name == "REASON_MAX" {
			if v.Value != uint64(bpf.GrebpfReasonREASON_MAX) {
				t.Errorf("REASON_MAX %d, Go has %d", v.Value, bpf.GrebpfReasonREASON_MAX)
			}
			continue
		}
		want := strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(v.Name, "REASON_")), "_", "-")
		if got := maps.ReasonName(maps.Reason(v.Value)); got != want {
			t.Errorf("reason %d: Go name %q, C name %s", v.Value, got, v.Name)
		}
	}
}

// TestTunnelRoundTripIPv6: a tunnel over IPv6 reads back as written, its
// encapsulation limit included, and decap finds it by its IPv6 addresses
// as packets carry them.
func TestTunnelRoundTripIPv6(t *testing.T) {
	testutil.NeedRoot(t)
	for _, limit := range []int{4, 0, -1} {
		var objs bpf.GrebpfObjects
		if err := bpf.LoadGrebpfObjects(&objs, nil); err != nil {
			t.Fatal(err)
		}
		defer objs.Close()
		in := tunnel.Tunnel{Name: "gre6", Local: netip.MustParseAddr("2001:db8:ffff:100::1"),
			Remote: netip.MustParseAddr("2001:db8:ffff:200::1"), EncapLimit: limit, TTL: 64, TOSInherit: true,
			OverlayLocal: netip.MustParseAddr("192.168.1.1"), OverlayRemote: netip.MustParseAddr("192.168.1.2"),
			WANNexthop: netip.MustParseAddr("2001:db8:ffff:100::254"), Link: tunnel.Link{Ifindex: 30, PeerIfindex: 31, WANIfindex: 2}}
		if err := maps.PutTunnel(&objs.GrebpfMaps, in); err != nil {
			t.Fatal(err)
		}
		ts, err := maps.Tunnels(&objs.GrebpfMaps)
		if err != nil || len(ts) != 1 || ts[0] != in {
			t.Fatalf("encaplimit %d: tunnels %+v, %v\nwant %+v", limit, ts, err, in)
		}
		var ep bpf.GrebpfEndpoint
		k := bpf.GrebpfEndpointKey{Local: bpf.GrebpfOuterAddr{A: [16]byte{0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff, 0x01, 0x00, 15: 1}},
			Remote: bpf.GrebpfOuterAddr{A: [16]byte{0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff, 0x02, 0x00, 15: 1}}}
		if err := objs.Endpoints.Lookup(k, &ep); err != nil || ep.Ifindex != 30 {
			t.Errorf("encaplimit %d: endpoint %+v, %v", limit, ep, err)
		}
	}
}

func TestTunnelRoundTrip(t *testing.T) {
	testutil.NeedRoot(t)
	var objs bpf.GrebpfObjects
	if err := bpf.LoadGrebpfObjects(&objs, nil); err != nil {
		t.Fatal(err)
	}
	defer objs.Close()
	ikey, okey := uint32(0xdeadbeef), uint32(7)
	in := tunnel.Tunnel{Name: "branch-office", Local: netip.MustParseAddr("10.0.0.1"),
		Remote: netip.MustParseAddr("10.0.0.2"), IKey: &ikey, OKey: &okey, TTL: 0, TOS: 0x20, RPFilter: tunnel.RPLoose,
		OverlayLocal: netip.MustParseAddr("192.168.9.1"), OverlayRemote: netip.MustParseAddr("192.168.9.2"),
		WANNexthop: netip.MustParseAddr("10.0.0.254"),
		Link:       tunnel.Link{Ifindex: 30, PeerIfindex: 31, WANIfindex: 2, MAC: [6]byte{2, 0, 0, 0, 0, 30}, PeerMAC: [6]byte{2, 0, 0, 0, 0, 31}}}
	if err := maps.PutTunnel(&objs.GrebpfMaps, in); err != nil {
		t.Fatal(err)
	}
	ts, err := maps.Tunnels(&objs.GrebpfMaps)
	if err != nil || len(ts) != 1 {
		t.Fatalf("tunnels %v, %v", ts, err)
	}
	got := ts[0]
	if got.IKey == nil || *got.IKey != ikey || got.OKey == nil || *got.OKey != okey {
		t.Fatalf("ikey %v okey %v, want %#x and %d", got.IKey, got.OKey, ikey, okey)
	}
	// The MACs live in the endpoint only: decap is their one reader.
	want := in
	want.Link.MAC, want.Link.PeerMAC = [6]byte{}, [6]byte{}
	got.IKey, want.IKey, got.OKey, want.OKey = nil, nil, nil, nil
	if got != want {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	// Encap finds the tunnel under both of its devices.
	for _, dev := range []uint32{30, 31} {
		var v bpf.GrebpfTunnel
		if err := objs.Tunnels.Lookup(dev, &v); err != nil || v.Ifindex != 30 || v.WanIfindex != 2 {
			t.Errorf("tunnel under ifindex %d: %+v, %v", dev, v, err)
		}
	}
	// Decap finds the endpoint by the input key in network order, as
	// packets carry it, and the outer addresses IPv4-mapped; an ICMP's
	// quote finds the tunnel by the output key.
	mapped := func(last byte) bpf.GrebpfOuterAddr {
		return bpf.GrebpfOuterAddr{A: [16]byte{10: 0xff, 11: 0xff, 12: 10, 15: last}}
	}
	var ep bpf.GrebpfEndpoint
	if err := objs.Endpoints.Lookup(bpf.GrebpfEndpointKey{Local: mapped(1), Remote: mapped(2), Key: 0xefbeadde, Keyed: 1}, &ep); err != nil {
		t.Fatal(err)
	}
	var sender uint32
	if err := objs.Senders.Lookup(bpf.GrebpfEndpointKey{Local: mapped(1), Remote: mapped(2), Key: 0x07000000, Keyed: 1}, &sender); err != nil || sender != 30 {
		t.Errorf("sender %d, %v", sender, err)
	}
	var paths uint32
	if err := objs.Peers.Lookup(bpf.GrebpfPeerKey{Local: mapped(1), Remote: mapped(2)}, &paths); err != nil || paths != 1 {
		t.Errorf("path holds %d tunnels, %v", paths, err)
	}
	if ep.Ifindex != 30 || ep.RxIfindex != 31 ||
		ep.Mac != in.Link.MAC || ep.PeerMac != in.Link.PeerMAC || ep.RpFilter != uint8(tunnel.RPLoose) {
		t.Errorf("endpoint %+v", ep)
	}
	if c, err := maps.TunnelCounters(&objs.GrebpfMaps, 30); err != nil || c != (tunnel.Counters{}) {
		t.Errorf("counters of a new tunnel: %+v, %v", c, err)
	}
	if err := maps.DeleteTunnel(&objs.GrebpfMaps, ts[0]); err != nil {
		t.Fatal(err)
	}
	if ts, _ := maps.Tunnels(&objs.GrebpfMaps); len(ts) != 0 {
		t.Errorf("tunnel left after delete: %v", ts)
	}
	if n, _ := objs.Tunnels.Info(); n != nil {
		var k uint32
		var v bpf.GrebpfTunnel
		if objs.Tunnels.Iterate().Next(&k, &v) {
			t.Errorf("tunnel map entry left after delete: ifindex %d", k)
		}
	}
}
