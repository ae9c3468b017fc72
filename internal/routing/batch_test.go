package routing

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/grebpf/grebpf/internal/tunnel"

	"github.com/grebpf/grebpf/internal/testutil"
)

// A device with 10.0.0.1/24, up, in a fresh namespace (a veth: this
// kernel has no dummy).
func wanDevice(t *testing.T) netlink.Link {
	testutil.NetNS(t)
	l := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "wan0"}, PeerName: "wan0peer"}
	if err := netlink.LinkAdd(l); err != nil {
		t.Fatal(err)
	}
	link, err := netlink.LinkByName("wan0")
	if err == nil {
		err = netlink.AddrAdd(link, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("10.0.0.1/24"))})
	}
	if err == nil {
		err = netlink.LinkSetUp(link)
	}
	if err != nil {
		t.Fatal(err)
	}
	return link
}

func batchRoute(link netlink.Link, p string) *netlink.Route {
	return &netlink.Route{LinkIndex: link.Attrs().Index, Dst: ipNet(netip.MustParsePrefix(p)),
		Gw: netip.MustParseAddr("10.0.0.2").AsSlice(), Src: netip.MustParseAddr("10.0.0.1").AsSlice(),
		Protocol: Proto, MTU: 1476, Table: unix.RT_TABLE_MAIN}
}

// More routes than one datagram holds, every one installed with what was
// asked; then all deleted, one of them twice (already gone is fine).
func TestRouteBatch(t *testing.T) {
	link := wanDevice(t)
	b, err := newRouteBatch()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const n = batchSize*2 + 10
	for i := range n {
		if err := b.replace(batchRoute(link, fmt.Sprintf("100.64.%d.%d/32", i>>8, i&255))); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.flush(); err != nil {
		t.Fatal(err)
	}
	rs, err := ours(link)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != n {
		t.Fatalf("%d routes installed, want %d", len(rs), n)
	}
	for _, r := range rs {
		if r.MTU != 1476 || !r.Gw.Equal(netip.MustParseAddr("10.0.0.2").AsSlice()) || !r.Src.Equal(netip.MustParseAddr("10.0.0.1").AsSlice()) {
			t.Fatalf("route %s: gw %s src %s mtu %d", r.Dst, r.Gw, r.Src, r.MTU)
		}
	}
	for _, r := range append(rs, rs[0]) {
		if err := b.del(&r); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.flush(); err != nil {
		t.Fatal(err)
	}
	if rs, _ := ours(link); len(rs) != 0 {
		t.Fatalf("%d routes left after delete", len(rs))
	}
}

// A request the kernel refuses is named in the error by its prefix, and
// the requests around it in the same datagram still take effect.
func TestRouteBatchError(t *testing.T) {
	link := wanDevice(t)
	b, err := newRouteBatch()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	bad := batchRoute(link, "100.64.0.2/32")
	bad.Gw = netip.MustParseAddr("192.0.2.1").AsSlice() // not on the link, not onlink
	for _, r := range []*netlink.Route{batchRoute(link, "100.64.0.1/32"), bad, batchRoute(link, "100.64.0.3/32")} {
		if err := b.replace(r); err != nil {
			t.Fatal(err)
		}
	}
	err = b.flush()
	if !errors.Is(err, unix.ENETUNREACH) || err.Error() != "add route 100.64.0.2/32: network is unreachable" {
		t.Fatalf("error %v, want add route 100.64.0.2/32: network is unreachable", err)
	}
	if rs, _ := ours(link); len(rs) != 2 {
		t.Fatalf("%d routes installed, want the 2 good ones", len(rs))
	}
}

// ours lists the grebpf routes through link.
func ours(link netlink.Link) ([]netlink.Route, error) {
	return Ours([]tunnel.Tunnel{{Link: tunnel.Link{Ifindex: uint32(link.Attrs().Index)}}})
}
