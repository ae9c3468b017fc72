package bpf_test

import (
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/grebpf/grebpf/internal/tunnel"
)

// xdpContext is struct xdp_md as BPF_PROG_TEST_RUN takes it.
type xdpContext struct {
	Data, DataEnd, DataMeta uint32
	IngressIfindex          uint32
	RxQueueIndex            uint32
	EgressIfindex           uint32
}

var macLANHost = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x11}

// lanSide adds to wanNS's namespace a LAN device lan0 (MAC macR1 too is
// fine: a different device) with 172.16.100.254/24 and the host
// 172.16.100.1 at macLANHost, unless withNeigh is false.
func lanSide(tb testing.TB, withNeigh bool) int {
	tb.Helper()
	must(tb, netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "lan0", HardwareAddr: macWAN}, PeerName: "lan0p"}))
	l, err := netlink.LinkByName("lan0")
	must(tb, err)
	p, err := netlink.LinkByName("lan0p")
	must(tb, err)
	must(tb, netlink.LinkSetUp(l))
	must(tb, netlink.LinkSetUp(p))
	must(tb, netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(172, 16, 100, 254), Mask: net.CIDRMask(24, 32)}}))
	if withNeigh {
		must(tb, netlink.NeighSet(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: unix.AF_INET,
			State: netlink.NUD_PERMANENT, IP: lan1Host, HardwareAddr: macLANHost}))
	}
	return l.Attrs().Index
}

// withTTL returns a copy of an IPv4 packet with another TTL and a correct checksum.
func withTTL(tb testing.TB, pkt []byte, ttl uint8) []byte {
	tb.Helper()
	p := gopacket.NewPacket(pkt, layers.LayerTypeIPv4, gopacket.Default)
	ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	ip.TTL = ttl
	return serialize(tb, ip, gopacket.Payload(ip.Payload))
}

func TestFastpathWAN(t *testing.T) {
	cases := []struct {
		name     string
		neigh    bool
		ttl      uint8
		dst      net.IP
		forwards bool // to the LAN; else into the stack on gre1
	}{
		{name: "forwarded", neigh: true, ttl: 63, dst: lan1Host, forwards: true},
		{name: "ttl 1 to the stack", neigh: true, ttl: 1, dst: lan1Host},
		{name: "unresolved neighbour to the stack", neigh: false, ttl: 63, dst: lan1Host},
		{name: "local destination to the stack", neigh: true, ttl: 63, dst: net.IPv4(172, 16, 100, 254)},
		// Hub transit: the stack re-encapsulates through the other tunnel.
		{name: "into a tunnel to the stack", neigh: true, ttl: 63, dst: net.IPv4(172, 16, 200, 9)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wan := wanNS(t, true)
			lanSide(t, c.neigh)
			link := tunnelDevs(t, wan)
			objs := loadOn(t, testTunnel(nil, link, tunnel.RPLoose))
			inner := innerPacket(t, lan2Host, c.dst, 0, c.ttl)
			in := greFrame(t, wanRemote, wanLocal, plainGRE(), inner)
			before := snapshot(t, &objs.GrebpfMaps)
			verdict, out := run(t, objs.FastpathWan, in, xdpContext{DataEnd: uint32(len(in)), IngressIfindex: uint32(wan)})
			reasons, moved := delta(before, snapshot(t, &objs.GrebpfMaps))
			want, wantVerdict := withMeta(link.Ifindex, toTunnel(t, inner)), uint32(xdpPass)
			if c.forwards {
				want, wantVerdict = frame(t, macLANHost, macWAN, withTTL(t, inner, c.ttl-1)), xdpRedirect
			}
			if verdict != wantVerdict {
				t.Fatalf("verdict %d, want %d (reasons %v)", verdict, wantVerdict, reasons)
			}
			if d := diff(out, want); d != "" {
				t.Errorf("frame:%s", d)
			}
			if len(reasons) != 0 || moved != (tunnel.Counters{RxPackets: 1, RxBytes: uint64(len(inner))}) {
				t.Errorf("counters %v %+v, want rx 1 only", reasons, moved)
			}
		})
	}
}

func TestFastpathLAN(t *testing.T) {
	cases := []struct {
		name    string
		neigh   bool
		ttl     uint8
		size    int // inner payload bytes
		dst     net.IP
		verdict uint32
	}{
		{name: "encapsulated and redirected", neigh: true, ttl: 64, dst: lan2Host, verdict: xdpRedirect},
		{name: "ttl 1 to the stack", neigh: true, ttl: 1, dst: lan2Host, verdict: xdpPass},
		{name: "over the tunnel mtu to the stack", neigh: true, ttl: 64, size: 1476 - 20 - 8 + 1, dst: lan2Host, verdict: xdpPass},
		{name: "unresolved next hop to the stack", neigh: false, ttl: 64, dst: lan2Host, verdict: xdpPass},
		{name: "not a tunnel route", neigh: true, ttl: 64, dst: net.IPv4(10, 100, 0, 254), verdict: xdpPass},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wan := wanNS(t, c.neigh)
			lan := lanSide(t, true)
			objs := loadOn(t, testTunnel(nil, tunnelDevs(t, wan), tunnel.RPStrict))
			inner := innerPacket(t, lan1Host, c.dst, 0, c.ttl)
			if c.size > 0 {
				ip := &layers.IPv4{Version: 4, IHL: 5, TTL: c.ttl, Flags: layers.IPv4DontFragment, Protocol: layers.IPProtocolUDP, SrcIP: lan1Host, DstIP: c.dst}
				udp := &layers.UDP{SrcPort: 1, DstPort: 2}
				udp.SetNetworkLayerForChecksum(ip)
				inner = serialize(t, ip, udp, gopacket.Payload(make([]byte, c.size)))
			}
			in := frame(t, macWAN, macLANHost, inner)
			before := snapshot(t, &objs.GrebpfMaps)
			verdict, out := run(t, objs.FastpathLan, in, xdpContext{DataEnd: uint32(len(in)), IngressIfindex: uint32(lan)})
			reasons, moved := delta(before, snapshot(t, &objs.GrebpfMaps))
			if verdict != c.verdict {
				t.Fatalf("verdict %d, want %d", verdict, c.verdict)
			}
			if verdict == xdpPass {
				if d := diff(out, in); d != "" {
					t.Errorf("passed frame changed:%s", d)
				}
				if len(reasons) != 0 || moved != (tunnel.Counters{}) {
					t.Errorf("counters %v %+v moved for a packet left to the stack", reasons, moved)
				}
				return
			}
			id := uint16(out[18])<<8 | uint16(out[19])
			want := expectedEncap(t, withTTL(t, inner, c.ttl-1), id, 64, 0, nil)
			if d := diff(out, want); d != "" {
				t.Errorf("encapsulated frame:%s", d)
			}
			if len(reasons) != 0 || moved != (tunnel.Counters{TxPackets: 1, TxBytes: uint64(len(inner))}) {
				t.Errorf("counters %v %+v, want tx 1 only", reasons, moved)
			}
		})
	}
}
