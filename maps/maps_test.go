package maps_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"

	"github.com/grebpf/grebpf/bpf"
	"github.com/grebpf/grebpf/internal/testutil"
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

func TestTunnelRoundTrip(t *testing.T) {
	testutil.NeedRoot(t)
	var objs bpf.GrebpfObjects
	if err := bpf.LoadGrebpfObjects(&objs, nil); err != nil {
		t.Fatal(err)
	}
	defer objs.Close()
	key := uint32(0xdeadbeef)
	in := maps.Tunnel{ID: 3, Name: "branch-office", Local: netip.MustParseAddr("10.0.0.1"),
		Remote: netip.MustParseAddr("10.0.0.2"), Key: &key, TTL: 0, TOS: 0x20, MTU: 1472,
		OverlayLocal: netip.MustParseAddr("192.168.9.1"), OverlayRemote: netip.MustParseAddr("192.168.9.2"), AddrOwned: true}
	if err := maps.PutTunnel(&objs.GrebpfMaps, in); err != nil {
		t.Fatal(err)
	}
	if err := maps.PutRoute(&objs.GrebpfMaps, netip.MustParsePrefix("172.20.0.0/16"), 3); err != nil {
		t.Fatal(err)
	}
	ts, err := maps.Tunnels(&objs.GrebpfMaps)
	if err != nil || len(ts) != 1 {
		t.Fatalf("tunnels %v, %v", ts, err)
	}
	got := ts[0]
	if got.Key == nil || *got.Key != key {
		t.Fatalf("key %v, want %#x", got.Key, key)
	}
	got.Key, in.Key = nil, nil
	if got != in {
		t.Errorf("got %+v\nwant %+v", got, in)
	}
	rs, err := maps.Routes(&objs.GrebpfMaps)
	if err != nil || len(rs) != 1 || rs[0] != (maps.Route{Prefix: netip.MustParsePrefix("172.20.0.0/16"), TunnelID: 3}) {
		t.Errorf("routes %v, %v", rs, err)
	}
	// The endpoint carries the key in network order, as decap compares it.
	var ep bpf.GrebpfEndpoint
	if err := objs.Endpoints.Lookup(bpf.GrebpfEndpointKey{Local: 0x0100000a, Remote: 0x0200000a}, &ep); err != nil {
		t.Fatal(err)
	}
	if ep.TunnelId != 3 || ep.Flags != maps.FlagKey || ep.Key != 0xefbeadde {
		t.Errorf("endpoint %+v", ep)
	}
	if err := maps.DeleteTunnel(&objs.GrebpfMaps, ts[0]); err != nil {
		t.Fatal(err)
	}
	if ts, _ := maps.Tunnels(&objs.GrebpfMaps); len(ts) != 0 {
		t.Errorf("tunnel left after delete: %v", ts)
	}
}
