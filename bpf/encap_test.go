package bpf_test

import (
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/grebpf/grebpf/internal/testutil"
	"github.com/grebpf/grebpf/maps"
)

// skbContext is struct __sk_buff as BPF_PROG_TEST_RUN takes it: only
// ifindex is set, so the program runs as if on that device's egress.
type skbContext struct {
	_       [40]byte
	Ifindex uint32
	_       [148]byte
}

// wanNS builds, in a fresh namespace, the WAN side encap's fib lookup
// sees: wan0 (MAC macR1, 10.100.0.1/24) with the gateway 10.100.0.254 at
// macWAN as a permanent neighbour and a default route through it.
func wanNS(tb testing.TB, withNeigh bool) int {
	tb.Helper()
	testutil.NetNS(tb)
	// A router forwards; bpf_fib_lookup answers only where forwarding is on.
	must(tb, os.WriteFile("/proc/sys/net/ipv4/conf/all/forwarding", []byte("1"), 0))
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "wan0", HardwareAddr: macR1}, PeerName: "wan0p"}
	must(tb, netlink.LinkAdd(veth))
	l, err := netlink.LinkByName("wan0")
	must(tb, err)
	peer, err := netlink.LinkByName("wan0p")
	must(tb, err)
	must(tb, netlink.LinkSetUp(l))
	must(tb, netlink.LinkSetUp(peer))
	must(tb, netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: wanLocal.AsSlice(), Mask: net.CIDRMask(24, 32)}}))
	if withNeigh {
		must(tb, netlink.NeighSet(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: unix.AF_INET,
			State: netlink.NUD_PERMANENT, IP: net.IPv4(10, 100, 0, 254), HardwareAddr: macWAN}))
	}
	must(tb, netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.IPv4(10, 100, 0, 254)}))
	return l.Attrs().Index
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

// expectedEncap builds, independently of the program, the frame ip_gre
// would send for inner: outer IPv4 with DF, the given TTL/TOS and id, GRE
// with the optional key, MACs of the outer next hop.
func expectedEncap(tb testing.TB, inner []byte, id uint16, ttl, tos uint8, key *uint32) []byte {
	tb.Helper()
	eth := &layers.Ethernet{DstMAC: macWAN, SrcMAC: macR1, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, IHL: 5, TOS: tos, Id: id, Flags: layers.IPv4DontFragment, TTL: ttl,
		Protocol: layers.IPProtocolGRE, SrcIP: wanLocal.AsSlice(), DstIP: wanRemote.AsSlice()}
	gre := plainGRE()
	if key != nil {
		gre = keyedGRE(*key)
	}
	return serialize(tb, eth, ip, gre, gopacket.Payload(inner))
}

func TestEncap(t *testing.T) {
	cases := []struct {
		name     string
		key      *uint32
		ttl      uint8 // tunnel TTL; 0 inherits
		tos      int   // fixed tunnel TOS, -1 inherits
		innerTOS uint8
		innerTTL uint8
		wantTTL  uint8
		wantTOS  uint8
	}{
		{name: "plain", ttl: 64, tos: -1, innerTTL: 63, wantTTL: 64},
		{name: "keyed", key: u32(testKey), ttl: 64, tos: -1, innerTTL: 63, wantTTL: 64},
		{name: "tos inherit dscp", ttl: 64, tos: -1, innerTOS: 0xb8, innerTTL: 63, wantTTL: 64, wantTOS: 0xb8},
		{name: "tos inherit ecn ect1", ttl: 64, tos: -1, innerTOS: 0x01, innerTTL: 63, wantTTL: 64, wantTOS: 0x01},
		{name: "ecn ce becomes ect0", ttl: 64, tos: -1, innerTOS: 0xbb, innerTTL: 63, wantTTL: 64, wantTOS: 0xba},
		{name: "fixed tos keeps inner ecn", ttl: 64, tos: 0x20, innerTOS: 0xb9, innerTTL: 63, wantTTL: 64, wantTOS: 0x21},
		{name: "ttl inherit", ttl: 0, tos: -1, innerTTL: 17, wantTTL: 17},
		{name: "ttl fixed", ttl: 200, tos: -1, innerTTL: 5, wantTTL: 200},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := skbContext{Ifindex: uint32(wanNS(t, true))}
			objs := load(t, c.key)
			putTunnel(t, &objs.GrebpfMaps, maps.Tunnel{ID: 1, Name: "gre1", Local: wanLocal, Remote: wanRemote, Key: c.key,
				TTL: c.ttl, TOSInherit: c.tos < 0, TOS: uint8(max(c.tos, 0)), MTU: 1476, OverlayLocal: overlayR1, OverlayRemote: overlayR2})
			inner := innerPacket(t, lan1Host, lan2Host, c.innerTOS, c.innerTTL)
			in := frame(t, macOverlay, macR1, inner)
			before := snapshot(t, &objs.GrebpfMaps)
			verdict, out := run(t, objs.EncapTc, in, ctx)
			reasons, tunnel := delta(before, snapshot(t, &objs.GrebpfMaps))
			if verdict != tcOK {
				t.Fatalf("verdict %d, want TC_ACT_OK (reasons %v)", verdict, reasons)
			}
			if len(out) < 20 {
				t.Fatalf("short output %x", out)
			}
			id := uint16(out[18])<<8 | uint16(out[19]) // random, as ip_gre's
			want := expectedEncap(t, inner, id, c.wantTTL, c.wantTOS, c.key)
			if d := diff(out, want); d != "" {
				t.Errorf("encapsulated frame:%s", d)
			}
			if len(reasons) != 0 || tunnel != (maps.Counters{TxPackets: 1, TxBytes: uint64(len(inner))}) {
				t.Errorf("counters moved %v %+v, want tx 1 packet %d bytes only", reasons, tunnel, len(inner))
			}
		})
	}
}

func TestEncapPassesOtherTraffic(t *testing.T) {
	ifindex := wanNS(t, true)
	ctx := skbContext{Ifindex: uint32(ifindex)}
	objs := load(t, nil)
	other := innerPacket(t, net.IPv4(10, 100, 0, 1), net.IPv4(10, 100, 0, 254), 0, 64)
	arp := serialize(t, &layers.Ethernet{DstMAC: layers.EthernetBroadcast, SrcMAC: macR1, EthernetType: layers.EthernetTypeARP},
		&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: layers.ARPRequest, SourceHwAddress: macR1, SourceProtAddress: wanLocal.AsSlice(),
			DstHwAddress: make([]byte, 6), DstProtAddress: net.IPv4(10, 100, 0, 254).To4()})
	for name, in := range map[string][]byte{"wan ip": frame(t, macWAN, macR1, other), "arp": arp} {
		before := snapshot(t, &objs.GrebpfMaps)
		verdict, out := run(t, objs.EncapTc, in, ctx)
		reasons, tunnel := delta(before, snapshot(t, &objs.GrebpfMaps))
		if verdict != tcOK || diff(out, in) != "" || len(reasons) != 0 || tunnel != (maps.Counters{}) {
			t.Errorf("%s: verdict %d, changed %v, counters %v %+v: want untouched pass", name, verdict, diff(out, in) != "", reasons, tunnel)
		}
	}
}

func TestEncapDrops(t *testing.T) {
	cases := []struct {
		name    string
		neigh   bool
		setup   func(tb testing.TB, m *maps.Maps)
		verdict uint32
		reason  string
	}{
		{name: "route to missing tunnel", neigh: true, verdict: tcShot, reason: "no-tunnel", setup: func(tb testing.TB, m *maps.Maps) {
			must(tb, maps.PutRoute(m, netip.MustParsePrefix("172.16.200.0/24"), 7))
		}},
		{name: "no route to remote", neigh: true, verdict: tcShot, reason: "no-outer-route", setup: func(tb testing.TB, m *maps.Maps) {
			must(tb, netlink.RouteDel(&netlink.Route{Dst: nil, Gw: net.IPv4(10, 100, 0, 254)}))
		}},
		// No neighbour for the gateway: bpf_redirect_neigh resolves it, as
		// the stack would. Not a drop, so no reason moves.
		{name: "unresolved next hop", neigh: false, verdict: tcRedirect},
		// A host that does not forward: bpf_fib_lookup refuses, and encap
		// hands the outer packet to bpf_redirect_neigh to route.
		{name: "forwarding off", neigh: true, verdict: tcRedirect, setup: func(tb testing.TB, m *maps.Maps) {
			must(tb, os.WriteFile("/proc/sys/net/ipv4/conf/all/forwarding", []byte("0"), 0))
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ifindex := wanNS(t, c.neigh)
			objs := load(t, nil)
			if c.setup != nil {
				c.setup(t, &objs.GrebpfMaps)
			}
			in := frame(t, macOverlay, macR1, innerPacket(t, lan1Host, lan2Host, 0, 63))
			before := snapshot(t, &objs.GrebpfMaps)
			verdict, _ := run(t, objs.EncapTc, in, skbContext{Ifindex: uint32(ifindex)})
			reasons, _ := delta(before, snapshot(t, &objs.GrebpfMaps))
			if verdict != c.verdict {
				t.Errorf("verdict %d, want %d", verdict, c.verdict)
			}
			if c.reason == "" && len(reasons) != 0 || c.reason != "" && (len(reasons) != 1 || reasons[c.reason] != 1) {
				t.Errorf("reasons moved %v, want %q", reasons, c.reason)
			}
		})
	}
}
