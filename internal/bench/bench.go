// Package bench measures grebpf against its baselines on the lab: 64-byte
// UDP over many flows from lan1 to lan2, made by an XDP program run through
// BPF_PROG_TEST_RUN live frames and counted and dropped by an XDP program on
// lan2, in packets per second delivered; and iperf3 TCP per mode. With a
// rate, the generator is paced below what every mode carries and what is
// measured is the CPU time each delivered packet costs.
//
// The WAN router in the middle forwards in BPF in every mode, and routes
// the LAN prefixes in the no-tunnel modes, so what is measured is the
// tunnel endpoints r1 and r2.
package bench

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/grebpf/grebpf/bpf"
	"github.com/grebpf/grebpf/internal/config"
	"github.com/grebpf/grebpf/internal/lab"
	"github.com/grebpf/grebpf/internal/netns"
	"github.com/grebpf/grebpf/loader"
)

// Port is the UDP destination of generated traffic.
const Port = 9

// Options of a run.
type Options struct {
	Duration time.Duration // per mode, generator
	Flows    int
	TCP      time.Duration // iperf3 per mode; 0 skips it
	Only     []string      // mode names; empty runs all
	// Routes adds this many /32 routes (100.64.0.0 up) to each grebpf
	// router's tunnel, to see what a big FIB costs.
	Routes int
	// RPFilter is every tunnel's inner source check, grebpf's and
	// ip_gre's rp_filter alike (empty: the default, strict), to see what
	// the check costs.
	RPFilter string
	// Rounds measures every mode this many times, the modes taking turns
	// in each round, and reports the median: one run under emulation
	// moved by half between two runs.
	Rounds int
	// ProgStats turns on the kernel's BPF run-time statistics while the
	// generator runs and reports what each program cost per run. The two
	// clock reads per run that costs lower every mode's pps.
	ProgStats bool
	// IPv6 generates UDP over IPv6 (and runs iperf3 over IPv6) through
	// the tunnels.
	IPv6 bool
	// OuterIPv6 runs the tunnels over the lab's WAN in IPv6 (GRE over
	// IPv6, ip6gre the kernel's). The modes without a tunnel have a path
	// only for what is of the WAN's family.
	OuterIPv6 bool
	// Rate paces the generator at this many packets per second (0: as
	// fast as it can) and measures the machine's CPU time per delivered
	// packet. Saturated, the generator shares the CPUs with the path, so
	// pps depends on where each mode drops what it cannot carry; paced
	// below every mode's capacity, nothing is dropped and the CPU time is
	// all the path's and the generator's. The generator mode is measured
	// too, and its cost is taken off the others' (PathNs).
	Rate int
}

// lab is the lab the run measures on.
func (o Options) lab() lab.Lab {
	if o.OuterIPv6 {
		return lab.Lab{Sites: 2, Topology: lab.TopologyMesh, WAN: lab.WANIPv6}
	}
	return lab.Default
}

// ProgCost is one program's share of a measurement: every instance of it
// (r1's and r2's, the WAN's) summed.
type ProgCost struct {
	Name     string  `json:"name"`
	Runs     uint64  `json:"runs"`
	NsPerRun float64 `json:"ns_per_run"`
}

// Result is one mode's measurement.
type Result struct {
	Mode      string  `json:"mode"`
	Generated uint64  `json:"generated"`
	Delivered uint64  `json:"delivered"`
	PPS       float64 `json:"pps"`
	Loss      float64 `json:"loss"` // fraction of generated not delivered
	TCPGbps   float64 `json:"tcp_gbps,omitempty"`
	// Each round's pps and TCP, in order; PPS and TCPGbps are their
	// medians, and Generated, Delivered and Loss are the median-pps round's.
	RoundsPPS []float64 `json:"rounds_pps"`
	RoundsTCP []float64 `json:"rounds_tcp_gbps,omitempty"`
	// With ProgStats: each program's cost in the median-pps round.
	Programs []ProgCost `json:"programs,omitempty"`
	// With Rate: the machine's CPU time (all CPUs, every context) per
	// delivered packet, each round's and the median; PathNs is the median
	// over the rounds of that less the generator mode's in the same round,
	// what the path from r1's LAN device to the sink costs, and PathRatio
	// is the reference's PathNs over this one's (the packets per CPU
	// second of the path, relative).
	CPUNs       float64   `json:"cpu_ns_per_packet,omitempty"`
	RoundsCPUNs []float64 `json:"rounds_cpu_ns_per_packet,omitempty"`
	PathNs      float64   `json:"path_ns_per_packet,omitempty"`
	PathRatio   float64   `json:"path_ratio,omitempty"`
	Ratio       float64   `json:"ratio"` // PPS over the reference's
	Reference   string    `json:"reference"`
	Unavailable string    `json:"unavailable,omitempty"`
}

// mode sets the lab up for one measurement; the returned func undoes what
// lab down does not.
type mode struct {
	name  string
	about string
	// sinkOn is where the XDP sink sits: lan2's eth0, or r1's lan1 for the
	// generator's own ceiling.
	sinkOn [2]string
	setup  func(p *progs) (cleanup func(), err error)
}

// progs are the bench programs, loaded once.
type progs struct{ objs bpf.BenchObjects }

// ModeNames are the modes bench measures, in the order it runs them.
func ModeNames() []string {
	var names []string
	for _, m := range modes(Options{}) {
		names = append(names, m.name)
	}
	return names
}

func modes(o Options) []mode {
	toLAN2 := [2]string{"lan2", "eth0"}
	return []mode{
		{"generator", "the generator into an XDP drop on r1: what it can offer", [2]string{"r1", "lan1"}, func(p *progs) (func(), error) {
			return nil, nil
		}},
		{"routing", "kernel routing, no tunnel: the WAN routes the LAN prefixes", toLAN2, func(p *progs) (func(), error) {
			if o.IPv6 || o.OuterIPv6 {
				return nil, errNoWANPath
			}
			return nil, lab.Default.RouteLANsOnWAN()
		}},
		{"xdp-forward", "XDP forwarding, no tunnel: the ceiling", toLAN2, func(p *progs) (func(), error) {
			if o.IPv6 || o.OuterIPv6 {
				return nil, errNoWANPath
			}
			if err := lab.Default.RouteLANsOnWAN(); err != nil {
				return nil, err
			}
			return p.attachAll(p.objs.FwdXdp, [][2]string{{"r1", "lan1"}, {"r1", "wan1"}, {"r2", "wan2"}, {"r2", "lan2"}})
		}},
		{"grebpf-tc-xdp", "grebpf: TC encap, XDP decap", toLAN2, grebpfMode(o, "--decap", "xdp")},
		{"grebpf-tc-tc", "grebpf: TC encap, TC ingress decap", toLAN2, grebpfMode(o, "--decap", "tc")},
		{"grebpf-tc-egress", "grebpf: TC encap on the tunnel interface's egress (no veth crossing, hidden from tcpdump), TC decap", toLAN2, grebpfMode(o, "--encap", "egress")},
		{"grebpf-fastpath", "grebpf: XDP fast path both ways", toLAN2, grebpfMode(o, "--fastpath", "LAN")},
		{"ip_gre", "the kernel's ip_gre (ip6gre over the IPv6 WAN)", toLAN2, func(p *progs) (func(), error) {
			if !loader.HaveIPGRE() || o.OuterIPv6 && !loader.HaveIP6GRE() {
				return nil, errUnavailable
			}
			// The same inner source check as grebpf's: ip_gre's rp_filter.
			return nil, o.lab().Attach(lab.TunnelKernel, func(_ lab.Site, cfg *config.Router) {
				cfg.Tunnels[0].RPFilter = o.RPFilter
			})
		}},
	}
}

var errUnavailable = errors.New("not on this kernel")

// errNoWANPath: without a tunnel, the LANs have no way across the lab's
// WAN, which routes only its own addresses (IPv4 ones, for IPv4 over the
// IPv4 WAN).
var errNoWANPath = errors.New("the lab's WAN carries this family only through a tunnel")

func grebpfMode(o Options, args ...string) func(p *progs) (func(), error) {
	return func(p *progs) (func(), error) {
		return nil, o.lab().Attach(lab.TunnelBPF, func(s lab.Site, cfg *config.Router) {
			cfg.Tunnels[0].RPFilter = o.RPFilter
			for i := 0; i < o.Routes; i++ {
				cfg.Tunnels[0].Routes = append(cfg.Tunnels[0].Routes,
					netip.AddrFrom4([4]byte{100, byte(64 + i>>16), byte(i >> 8), byte(i)}).String()+"/32")
			}
			switch args[0] {
			case "--decap":
				cfg.Decap = args[1]
			case "--fastpath":
				cfg.FastPath = []string{s.Host()}
			case "--encap":
				cfg.Encap = args[1]
			}
		})
	}
}

// attachAll puts prog on each (namespace, device) in native XDP mode.
func (p *progs) attachAll(prog *ebpf.Program, where [][2]string) (func(), error) {
	var links []link.Link
	cleanup := func() {
		for _, l := range links {
			l.Close()
		}
	}
	for _, w := range where {
		err := netns.Do(w[0], func() error {
			dev, err := netlink.LinkByName(w[1])
			if err != nil {
				return err
			}
			l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: dev.Attrs().Index, Flags: link.XDPDriverMode})
			if err == nil {
				links = append(links, l)
			}
			return err
		})
		if err != nil {
			cleanup()
			return nil, fmt.Errorf("attach %s on %s in %s: %w", prog, w[1], w[0], err)
		}
	}
	return cleanup, nil
}

// attachTCIngress puts prog on the TC ingress of each (namespace, device),
// through a clsact qdisc of its own, which the cleanup removes.
func (p *progs) attachTCIngress(prog *ebpf.Program, where [][2]string) (func(), error) {
	var added [][2]string
	cleanup := func() {
		for _, w := range added {
			_ = netns.Do(w[0], func() error {
				dev, err := netlink.LinkByName(w[1])
				if err != nil {
					return err
				}
				return netlink.QdiscDel(loader.ClsactQdisc(dev.Attrs().Index))
			})
		}
	}
	for _, w := range where {
		err := netns.Do(w[0], func() error {
			dev, err := netlink.LinkByName(w[1])
			if err != nil {
				return err
			}
			if err := netlink.QdiscAdd(loader.ClsactQdisc(dev.Attrs().Index)); err != nil {
				return err
			}
			added = append(added, w)
			f := loader.ClsactFilter(dev.Attrs().Index, ebpf.AttachTCXIngress)
			f.Fd = prog.FD()
			return netlink.FilterAdd(f)
		})
		if err != nil {
			cleanup()
			return nil, fmt.Errorf("attach %s on %s in %s: %w", prog, w[1], w[0], err)
		}
	}
	return cleanup, nil
}

// Run measures each mode on a fresh lab and returns the results, each with
// its ratio to ip_gre where the kernel has it, to kernel routing elsewhere.
func Run(o Options, progress func(string)) ([]Result, error) {
	spec, err := bpf.LoadBench()
	if err != nil {
		return nil, err
	}
	if err := spec.Variables["bench_port"].Set(uint16(Port)); err != nil {
		return nil, err
	}
	if err := spec.Variables["bench_flows"].Set(uint16(o.Flows)); err != nil {
		return nil, err
	}
	var p progs
	if err := spec.LoadAndAssign(&p.objs, nil); err != nil {
		return nil, fmt.Errorf("load bench programs: %w", err)
	}
	defer p.objs.Close()

	rounds := map[string][]Result{}
	var order []string
	for round := 1; round <= max(o.Rounds, 1); round++ {
		for _, m := range modes(o) {
			// Paced, every cost is the generator's plus the path's.
			if len(o.Only) > 0 && !slices.Contains(o.Only, m.name) && (o.Rate == 0 || m.name != "generator") {
				continue
			}
			if round == 1 {
				order = append(order, m.name)
			}
			if len(rounds[m.name]) > 0 && rounds[m.name][0].Unavailable != "" {
				continue
			}
			progress(fmt.Sprintf("round %d/%d, %s: %s", round, max(o.Rounds, 1), m.name, m.about))
			r, err := p.measure(m, o)
			if errors.Is(err, errUnavailable) || errors.Is(err, errNoWANPath) {
				r = Result{Mode: m.name, Unavailable: err.Error()}
			} else if err != nil {
				return nil, fmt.Errorf("%s: %w", m.name, err)
			}
			rounds[m.name] = append(rounds[m.name], r)
		}
	}
	var results []Result
	for _, name := range order {
		results = append(results, median(rounds[name], o.Rate > 0))
	}
	ref := "routing"
	for _, r := range results {
		if r.Mode == "ip_gre" && r.Unavailable == "" {
			ref = "ip_gre"
		}
	}
	var refPPS, refPathNs float64
	var gen []float64
	for _, r := range results {
		if r.Mode == ref {
			refPPS = r.PPS
		}
		if r.Mode == "generator" {
			gen = r.RoundsCPUNs
		}
	}
	for i, r := range results {
		if r.Mode == "generator" || len(gen) == 0 || len(r.RoundsCPUNs) != len(gen) {
			continue
		}
		// Round by round: the generator ran just before, on a machine
		// in the same state, which a median of each alone does not
		// pair up.
		path := make([]float64, len(gen))
		for k := range gen {
			path[k] = r.RoundsCPUNs[k] - gen[k]
		}
		slices.Sort(path)
		results[i].PathNs = path[len(path)/2]
		if r.Mode == ref {
			refPathNs = results[i].PathNs
		}
	}
	for i := range results {
		results[i].Reference = ref
		if refPPS > 0 {
			results[i].Ratio = results[i].PPS / refPPS
		}
		if refPathNs > 0 && results[i].PathNs > 0 {
			results[i].PathRatio = refPathNs / results[i].PathNs
		}
	}
	return results, nil
}

// median folds one mode's rounds into one result: the median-pps round,
// or with byCPU (paced, where every round's pps is the rate) the median
// CPU-cost round.
func median(rs []Result, byCPU bool) Result {
	if rs[0].Unavailable != "" {
		return rs[0]
	}
	var pps, tcp, cpu []float64
	for _, r := range rs {
		pps = append(pps, r.PPS)
		if r.TCPGbps > 0 {
			tcp = append(tcp, r.TCPGbps)
		}
		if r.CPUNs > 0 {
			cpu = append(cpu, r.CPUNs)
		}
	}
	sorted := slices.Clone(rs)
	slices.SortFunc(sorted, func(a, b Result) int {
		if byCPU {
			return cmp.Compare(a.CPUNs, b.CPUNs)
		}
		return cmp.Compare(a.PPS, b.PPS)
	})
	out := sorted[len(sorted)/2]
	out.RoundsPPS, out.RoundsTCP, out.RoundsCPUNs = pps, tcp, cpu
	if len(tcp) > 0 {
		sorted := slices.Sorted(slices.Values(tcp))
		out.TCPGbps = sorted[len(sorted)/2]
	}
	return out
}

// measure builds the lab, sets the mode up, runs the generator and iperf3.
func (p *progs) measure(m mode, o Options) (r Result, err error) {
	r.Mode = m.name
	lab.Down()
	// XDP redirects on r1/r2 lose a veth sender's partial checksums: those
	// modes need the hosts' checksum offload off (see lab), the others not.
	xdpRouters := m.name == "grebpf-fastpath" || m.name == "xdp-forward"
	if err := o.lab().Up(lab.TunnelNone, xdpRouters); err != nil {
		return r, err
	}
	defer lab.Down()
	// Every veth gets NAPI (GRO on), which XDP_TX and XDP_REDIRECT into its
	// peer need, in every mode alike.
	for _, nd := range [][2]string{{"r1", "lan1"}, {"r1", "wan1"}, {"wan", "r1"}, {"wan", "r2"}, {"r2", "wan2"}, {"r2", "lan2"}, {"lan2", "eth0"}} {
		if out, err := exec.Command("ip", "netns", "exec", nd[0], "ethtool", "-K", nd[1], "gro", "on").CombinedOutput(); err != nil {
			return r, fmt.Errorf("gro on %s in %s: %s", nd[1], nd[0], out)
		}
	}
	// The WAN router forwards in BPF so it is never the bottleneck: in XDP
	// where r1 and r2 send it XDP frames, at TC ingress where they send
	// skbs. XDP there would copy every encapsulated skb (too little
	// headroom for XDP) into a new page first, a cost of the lab that
	// every tunnel, ip_gre included, would pay and routing would not.
	attachWAN, fwd := p.attachTCIngress, p.objs.FwdTc
	if xdpRouters {
		attachWAN, fwd = p.attachAll, p.objs.FwdXdp
	}
	cleanupWAN, err := attachWAN(fwd, [][2]string{{"wan", "r1"}, {"wan", "r2"}})
	if err != nil {
		return r, err
	}
	defer cleanupWAN()
	cleanup, err := m.setup(p)
	if cleanup != nil {
		defer cleanup()
	}
	if err != nil {
		return r, err
	}
	cleanupSink, err := p.attachAll(p.objs.SinkXdp, [][2]string{m.sinkOn})
	if err != nil {
		return r, err
	}
	defer cleanupSink()
	if err := warmUp(o.IPv6); err != nil {
		return r, err
	}

	before, err := p.sunk()
	if err != nil {
		return r, err
	}
	var statsOn io.Closer
	var statsBefore map[string]loader.ProgramRuns
	if o.ProgStats {
		if statsOn, err = ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME)); err != nil {
			return r, fmt.Errorf("BPF run-time statistics: %w", err)
		}
		defer statsOn.Close()
		if statsBefore, err = programRuns(); err != nil {
			return r, err
		}
	}
	cpuBefore, err := busyCPU()
	if err != nil {
		return r, err
	}
	gen, elapsed, err := p.generate(o.Duration, o.Rate, o.IPv6)
	if err != nil {
		return r, err
	}
	time.Sleep(100 * time.Millisecond) // the last frames in flight
	cpuAfter, err := busyCPU()
	if err != nil {
		return r, err
	}
	if o.ProgStats {
		after, err := programRuns()
		if err != nil {
			return r, err
		}
		statsOn.Close()
		r.Programs = programCosts(statsBefore, after)
	}
	after, err := p.sunk()
	if err != nil {
		return r, err
	}
	r.Generated, r.Delivered = gen, after-before
	r.PPS = float64(r.Delivered) / elapsed.Seconds()
	if o.Rate > 0 && r.Delivered > 0 {
		r.CPUNs = float64(cpuAfter-cpuBefore) / float64(r.Delivered)
	}
	if gen > 0 {
		r.Loss = 1 - float64(r.Delivered)/float64(gen)
	}
	if o.TCP > 0 && m.name != "generator" {
		// TCP goes to lan2's stack. Where r1 and r2 forward in the kernel,
		// TCP crosses the veths as 64 KB GSO packets, which the WAN must
		// forward in the kernel too (XDP cannot take them): 10+ Gbit/s,
		// not the bottleneck. Where r1 and r2 redirect in XDP, packets are
		// wire-sized, one by one, and the WAN keeps forwarding in XDP:
		// in the kernel it was the bottleneck (0.05 Gbit/s in the VM).
		cleanupSink()
		if !xdpRouters {
			cleanupWAN()
		}
		if r.TCPGbps, err = iperf(o.TCP, o.IPv6); err != nil {
			return r, err
		}
	}
	return r, nil
}

// programs whose cost a measurement reports: grebpf's and the bench's own.
var costed = []string{"gen_xdp", "sink_xdp", "fwd_xdp", "fwd_tc", "decap_xdp", "decap_tc", "encap_tc", "fastpath_wan", "fastpath_lan"}

// programRuns sums, by name, the statistics of every loaded program in
// costed: the same program is loaded once per router.
func programRuns() (map[string]loader.ProgramRuns, error) {
	return loader.SumProgramRuns(func(info *ebpf.ProgramInfo) bool { return slices.Contains(costed, info.Name) })
}

// programCosts is what ran between two programRuns, in costed's order.
func programCosts(before, after map[string]loader.ProgramRuns) []ProgCost {
	var out []ProgCost
	for _, name := range costed {
		runs := after[name].Runs - before[name].Runs
		if runs == 0 {
			continue
		}
		ns := float64(after[name].Runtime-before[name].Runtime) / float64(runs)
		out = append(out, ProgCost{Name: name, Runs: runs, NsPerRun: ns})
	}
	return out
}

// The lab addresses traffic goes between, over IPv4 and IPv6.
var (
	lan1, lan2       = lab.Site(1), lab.Site(2)
	from4, to4       = lan1.HostAddr(), lan2.HostAddr()
	from6, to6       = lan1.HostAddr6(), lan2.HostAddr6()
	router4, router6 = lan1.RouterLAN(), lan1.RouterLAN6()
)

// warmUp resolves every neighbour on the path, so that the first measured
// frames do not wait for ARP or neighbour discovery.
func warmUp(v6 bool) error {
	to, router := to4, router4
	if v6 {
		to, router = to6, router6
	}
	out, err := exec.Command("ip", "netns", "exec", "lan1", "ping", "-c", "3", "-i", "0.2", "-W", "1", to.String()).CombinedOutput()
	if err != nil && !bytes.Contains(out, []byte(" 0% packet loss")) {
		// The generator mode has no path to lan2: only lan1's neighbours matter.
		exec.Command("ip", "netns", "exec", "lan1", "ping", "-c", "1", "-W", "1", router.String()).Run()
	}
	return nil
}

// sunk is how many generated packets the sink has counted.
func (p *progs) sunk() (uint64, error) { return total(p.objs.SinkPackets) }

// total sums a one-entry per-CPU counter.
func total(m *ebpf.Map) (uint64, error) {
	var per []uint64
	if err := m.Lookup(uint32(0), &per); err != nil {
		return 0, err
	}
	var n uint64
	for _, v := range per {
		n += v
	}
	return n, nil
}

// frame is the generated packet: 64 bytes, lan1 → lan2:Port, UDP over
// IPv4 or (v6) IPv6, from source port 1024 (the generator changes it and
// the checksum).
func frame(dst, src net.HardwareAddr, v6 bool) ([]byte, error) {
	eth := &layers.Ethernet{DstMAC: dst, SrcMAC: src, EthernetType: layers.EthernetTypeIPv4}
	udp := &layers.UDP{SrcPort: 1024, DstPort: Port}
	var ip gopacket.SerializableLayer
	hdrs := 14 + 20 + 8
	if v6 {
		hdrs = 14 + 40 + 8
		eth.EthernetType = layers.EthernetTypeIPv6
		ip6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP, SrcIP: from6.AsSlice(), DstIP: to6.AsSlice()}
		udp.SetNetworkLayerForChecksum(ip6)
		ip = ip6
	} else {
		ip4 := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: from4.AsSlice(), DstIP: to4.AsSlice()}
		udp.SetNetworkLayerForChecksum(ip4)
		ip = ip4
	}
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, udp, gopacket.Payload(make([]byte, 64-hdrs)))
	return buf.Bytes(), err
}

// xdpMD is struct xdp_md for BPF_PROG_TEST_RUN.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// busyCPU is the CPU time that all CPUs together have spent outside idle
// since boot: the time since boot (CLOCK_MONOTONIC, which stops in
// suspend as idle time does) times the CPUs, less their idle time in
// /proc/stat. A tickless kernel measures idle time at each entry and exit
// (busy time it only samples at ticks, too coarsely at a light load),
// and reports it in USER_HZ units of 10 ms: over a measurement of seconds
// that is well under 1%.
func busyCPU() (time.Duration, error) {
	var now unix.Timespec
	b, err := os.ReadFile("/proc/stat")
	if err == nil {
		err = unix.ClockGettime(unix.CLOCK_MONOTONIC, &now)
	}
	if err != nil {
		return 0, err
	}
	var idle, cpus uint64
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasPrefix(f[0], "cpu") {
			continue
		}
		if f[0] == "cpu" {
			// idle and iowait
			for _, v := range f[4:6] {
				n, err := strconv.ParseUint(v, 10, 64)
				if err != nil {
					return 0, fmt.Errorf("/proc/stat: %q: %w", line, err)
				}
				idle += n
			}
			continue
		}
		cpus++
	}
	if cpus == 0 {
		return 0, errors.New("/proc/stat lists no CPU")
	}
	return time.Duration(cpus)*time.Duration(now.Nano()) - time.Duration(idle)*time.Second/userHZ, nil
}

// userHZ is the unit of /proc/stat's counters on every Linux architecture
// grebpf builds for.
const userHZ = 100

// pacedBurst is how many frames a paced generator sends at a time, at
// most every minPacing: each BPF_PROG_TEST_RUN sets a page pool up and
// tears it down, which a burst of 8 of its 64-frame batches spreads
// thin, and every batch is carried on before the next is made, so the
// burst does not overrun the veths' rings.
const (
	pacedBurst = 512
	minPacing  = 10 * time.Millisecond
)

// generate transmits frames out of lan1's eth0 for d, at rate per second
// (0: as fast as it can), and returns how many.
func (p *progs) generate(d time.Duration, rate int, v6 bool) (uint64, time.Duration, error) {
	var (
		sent    uint64
		elapsed time.Duration
	)
	err := netns.Do("lan1", func() error {
		eth0, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		var peerMAC net.HardwareAddr
		if err := netns.Do("r1", func() error {
			l, err := netlink.LinkByName("lan1")
			if err == nil {
				peerMAC = l.Attrs().HardwareAddr
			}
			return err
		}); err != nil {
			return err
		}
		data, err := frame(peerMAC, eth0.Attrs().HardwareAddr, v6)
		if err != nil {
			return err
		}
		if err := p.objs.FrameTemplate.Set(data); err != nil {
			return fmt.Errorf("generator template: %w", err)
		}
		// What was sent is the generator's own count: a run interrupted
		// by a signal is run again, so runs × repeat undercounts.
		before, err := total(p.objs.GenSeq)
		if err != nil {
			return err
		}
		const batch = 1 << 16
		var due uint64
		pacing := minPacing
		if rate > 0 {
			pacing = max(pacing, time.Duration(pacedBurst*float64(time.Second)/float64(rate)))
		}
		start := time.Now()
		for time.Since(start) < d {
			n := uint64(batch)
			if rate > 0 {
				// What is due by now, so that a late wake-up catches up.
				time.Sleep(pacing - time.Since(start)%pacing)
				want := uint64(time.Since(start).Seconds() * float64(rate))
				if want <= due {
					continue
				}
				n = min(want-due, batch)
				due += n
			}
			opts := &ebpf.RunOptions{Data: data, Repeat: uint32(n), Flags: unix.BPF_F_TEST_XDP_LIVE_FRAMES,
				Context: xdpMD{DataEnd: uint32(len(data)), IngressIfindex: uint32(eth0.Attrs().Index)}}
			if _, err := p.objs.GenXdp.Run(opts); err != nil {
				return fmt.Errorf("generator: %w", err)
			}
		}
		elapsed = time.Since(start)
		after, err := total(p.objs.GenSeq)
		sent = after - before
		return err
	})
	return sent, elapsed, err
}

// iperf runs iperf3 TCP lan1 → lan2 (over IPv6 with v6) and returns
// Gbit/s received.
func iperf(d time.Duration, v6 bool) (float64, error) {
	to := to4
	if v6 {
		to = to6
	}
	server := exec.Command("ip", "netns", "exec", "lan2", "iperf3", "-s", "-1")
	if err := server.Start(); err != nil {
		return 0, err
	}
	defer func() { server.Process.Kill(); server.Wait() }()
	// iperf3 -J does not always fail when it cannot connect: wait until
	// the server listens.
	for i := 0; ; i++ {
		ss, _ := exec.Command("ip", "netns", "exec", "lan2", "ss", "-Hltn", "sport", "=", ":5201").Output()
		if bytes.Contains(ss, []byte("5201")) {
			break
		}
		if i == 50 {
			return 0, errors.New("iperf3 server in lan2 never listened")
		}
		time.Sleep(100 * time.Millisecond)
	}
	out, err := exec.Command("ip", "netns", "exec", "lan1", "iperf3", "-c", to.String(), "-J",
		"-t", strconv.Itoa(int(d.Seconds()))).Output()
	if err != nil {
		return 0, fmt.Errorf("iperf3: %v: %.300s", err, out)
	}
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &res); err != nil || res.End.SumReceived.BitsPerSecond == 0 {
		return 0, fmt.Errorf("iperf3 measured nothing (%v): %.300s", err, out)
	}
	return res.End.SumReceived.BitsPerSecond / 1e9, nil
}
