// Package lab builds the reference site-to-site scenario (DESIGN §2) in
// five network namespaces, with no tunnel, a grebpf tunnel or an ip_gre
// tunnel between r1 and r2.
package lab

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"github.com/grebpf/grebpf/internal/config"
	"github.com/grebpf/grebpf/internal/netns"
	"github.com/grebpf/grebpf/loader"
)

// Namespaces of the lab, in build order.
var Namespaces = []string{"lan1", "r1", "wan", "r2", "lan2"}

// Tunnel modes.
const (
	TunnelNone   = "none"
	TunnelBPF    = "bpf"
	TunnelKernel = "kernel"
)

// topology is the lab without a tunnel. The WAN router blackholes private
// space, so nothing crosses it unencapsulated: traceroute shows * * * there.
var topology = [][]string{
	{"link", "add", "eth0", "netns", "lan1", "type", "veth", "peer", "name", "lan1", "netns", "r1"},
	{"link", "add", "wan1", "netns", "r1", "type", "veth", "peer", "name", "r1", "netns", "wan"},
	{"link", "add", "wan2", "netns", "r2", "type", "veth", "peer", "name", "r2", "netns", "wan"},
	{"link", "add", "eth0", "netns", "lan2", "type", "veth", "peer", "name", "lan2", "netns", "r2"},

	{"-n", "lan1", "addr", "add", "172.16.100.1/24", "dev", "eth0"},
	{"-n", "r1", "addr", "add", "172.16.100.254/24", "dev", "lan1"},
	{"-n", "r1", "addr", "add", "10.100.0.1/24", "dev", "wan1"},
	{"-n", "wan", "addr", "add", "10.100.0.254/24", "dev", "r1"},
	{"-n", "wan", "addr", "add", "10.200.0.254/24", "dev", "r2"},
	{"-n", "r2", "addr", "add", "10.200.0.1/24", "dev", "wan2"},
	{"-n", "r2", "addr", "add", "172.16.200.254/24", "dev", "lan2"},
	{"-n", "lan2", "addr", "add", "172.16.200.1/24", "dev", "eth0"},

	{"-n", "lan1", "link", "set", "lo", "up"}, {"-n", "lan1", "link", "set", "eth0", "up"},
	{"-n", "r1", "link", "set", "lo", "up"}, {"-n", "r1", "link", "set", "lan1", "up"}, {"-n", "r1", "link", "set", "wan1", "up"},
	{"-n", "wan", "link", "set", "lo", "up"}, {"-n", "wan", "link", "set", "r1", "up"}, {"-n", "wan", "link", "set", "r2", "up"},
	{"-n", "r2", "link", "set", "lo", "up"}, {"-n", "r2", "link", "set", "wan2", "up"}, {"-n", "r2", "link", "set", "lan2", "up"},
	{"-n", "lan2", "link", "set", "lo", "up"}, {"-n", "lan2", "link", "set", "eth0", "up"},

	{"-n", "lan1", "route", "add", "default", "via", "172.16.100.254"},
	{"-n", "r1", "route", "add", "default", "via", "10.100.0.254"},
	{"-n", "r2", "route", "add", "default", "via", "10.200.0.254"},
	{"-n", "lan2", "route", "add", "default", "via", "172.16.200.254"},
	{"-n", "wan", "route", "add", "blackhole", "172.16.0.0/12"},
	{"-n", "wan", "route", "add", "blackhole", "192.168.0.0/16"},
}

// Router is the grebpf configuration of r1 or r2 in the lab.
func Router(name string) config.Router {
	t := config.Tunnel{Name: "gre1", Local: "10.100.0.1", Remote: "10.200.0.1",
		Overlay: "192.168.1.1", Peer: "192.168.1.2", Routes: []string{"172.16.200.0/24"}}
	dev := "wan1"
	if name == "r2" {
		t = config.Tunnel{Name: "gre1", Local: "10.200.0.1", Remote: "10.100.0.1",
			Overlay: "192.168.1.2", Peer: "192.168.1.1", Routes: []string{"172.16.100.0/24"}}
		dev = "wan2"
	}
	return config.Router{Device: dev, Tunnels: []config.Tunnel{t}}
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %s", strings.Join(args, " "), strings.TrimSpace(string(out)))
	}
	return nil
}

func sysctl(ns, key, val string) error {
	out, err := exec.Command("ip", "netns", "exec", ns, "sysctl", "-qw", key+"="+val).CombinedOutput()
	if err != nil {
		return fmt.Errorf("sysctl %s=%s in %s: %s", key, val, ns, strings.TrimSpace(string(out)))
	}
	return nil
}

// fastPathPrep is what veths need for the XDP fast path, where a real wire
// does not: NAPI on the peer of every device XDP redirects into (GRO on
// gives it), and complete checksums from every sender: an XDP redirect
// drops the partial-checksum state a veth sender leaves, and so does the
// WAN router's when it forwards what its GRO merged (TCP through XDP
// forwarding on r1 and r2 arrived with bad checksums until its veths
// computed them: tx off, as a wire would carry them).
var fastPathPrep = [][]string{
	{"wan", "ethtool", "-K", "r1", "gro", "on", "tx", "off"},
	{"wan", "ethtool", "-K", "r2", "gro", "on", "tx", "off"},
	{"lan1", "ethtool", "-K", "eth0", "gro", "on", "tx", "off"},
	{"lan2", "ethtool", "-K", "eth0", "gro", "on", "tx", "off"},
}

// Up builds the lab with the given tunnel; with fastPath the veths are
// prepared for the XDP fast path, and a bpf tunnel uses it. A partial lab
// is torn down.
func Up(tunnel string, fastPath bool) (err error) {
	switch tunnel {
	case TunnelNone, TunnelBPF:
	case TunnelKernel:
		if fastPath {
			return errors.New("the fast path is grebpf's: use --tunnel bpf or none with --fastpath")
		}
		if !loader.HaveIPGRE() {
			return errors.New("this kernel has no ip_gre (modprobe ip_gre fails): use --tunnel bpf, or run it in a VM with make test-vm")
		}
	default:
		return fmt.Errorf("tunnel %q: use none, bpf or kernel", tunnel)
	}
	for _, ns := range Namespaces {
		if netns.Exists(ns) {
			return fmt.Errorf("namespace %s already exists: run grebpf lab down first", ns)
		}
	}
	defer func() {
		if err != nil {
			Down()
		}
	}()
	for _, ns := range Namespaces {
		if err := ip("netns", "add", ns); err != nil {
			return err
		}
	}
	for _, args := range topology {
		if err := ip(args...); err != nil {
			return err
		}
	}
	for _, ns := range []string{"r1", "wan", "r2"} {
		if err := sysctl(ns, "net.ipv4.ip_forward", "1"); err != nil {
			return err
		}
	}
	if fastPath {
		for _, c := range fastPathPrep {
			if out, err := exec.Command("ip", append([]string{"netns", "exec"}, c...)...).CombinedOutput(); err != nil {
				return fmt.Errorf("%s in %s: %s", strings.Join(c[1:], " "), c[0], strings.TrimSpace(string(out)))
			}
		}
	}
	if tunnel == TunnelNone {
		return nil
	}
	// r2 first: its decap must be live before r1 starts encapsulating.
	for _, r := range []string{"r2", "r1"} {
		err := netns.Do(r, func() error {
			var err error
			cfg := Router(r)
			switch {
			case tunnel == TunnelKernel:
				_, err = loader.AttachKernel(r, cfg)
			case fastPath:
				cfg.FastPath = []string{map[string]string{"r1": "lan1", "r2": "lan2"}[r]}
				_, err = loader.Attach(r, cfg)
			default:
				_, err = loader.Attach(r, cfg)
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("attach grebpf in %s: %w", r, err)
		}
	}
	return nil
}

// Down detaches any grebpf data plane in the lab and deletes its
// namespaces. Missing pieces are fine.
func Down() error {
	var errs []error
	// Every detach before any namespace goes: deleting one namespace
	// destroys its veths' peers in the others a moment later, and a detach
	// that finds its device half gone fails (seen on 6.1: r2's wan2 went
	// with the wan namespace).
	for _, ns := range Namespaces {
		if netns.Exists(ns) && loader.Attached(ns) {
			errs = append(errs, netns.Do(ns, func() error { return loader.Detach(ns) }))
		}
	}
	for _, ns := range Namespaces {
		if netns.Exists(ns) {
			errs = append(errs, ip("netns", "del", ns))
		}
	}
	return errors.Join(errs...)
}
