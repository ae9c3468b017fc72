package main

import (
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/grebpf/grebpf/internal/config"
	"github.com/grebpf/grebpf/loader"
)

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// attachRouter turns attach's flags into a router: either --config FILE,
// or one tunnel described by flags.
func attachRouter(g *globals, args []string) (config.Router, error) {
	fs := newFlags(g, "attach", "attach --dev WAN --local A --remote B --overlay X --peer Y --route PREFIX… | attach --config FILE")
	var (
		r        config.Router
		t        config.Tunnel
		routes   listFlag
		fastpath listFlag
		file     string
		site     string
	)
	fs.StringVar(&file, "config", "", "YAML file describing the router (device, tunnels, routes), or several under sites:")
	fs.StringVar(&site, "site", "", "with --config: the part of the file under sites: to attach")
	fs.StringVar(&r.Device, "dev", "", "WAN device")
	fs.StringVar(&r.Mode, "mode", "", "bpf (default) or kernel (an ip_gre netdev per tunnel: the fallback)")
	fs.StringVar(&r.Decap, "decap", "", "where to decapsulate: auto, xdp or tc (default auto: tc on veth, xdp elsewhere)")
	fs.StringVar(&r.Encap, "encap", "", "where to encapsulate: peer (the tunnel interface's veth peer: the interface counts and shows what it sends) or egress (the interface's own egress: one veth crossing less, the interface shows nothing sent); default peer")
	fs.BoolVar(&r.XDPGeneric, "xdp-generic", false, "attach XDP in generic (skb) mode")
	fs.StringVar(&r.TC, "tc", "", "TC attach: auto, tcx or clsact (default auto: tcx where the kernel has it)")
	fs.StringVar(&t.Name, "name", "", "tunnel name (default gre1)")
	fs.StringVar(&t.Local, "local", "", "outer source address (this router's WAN address)")
	fs.StringVar(&t.Remote, "remote", "", "outer destination address (the peer's WAN address)")
	fs.StringVar(&t.Key, "key", "", "GRE key (RFC 2890) sent and required; none if empty")
	fs.StringVar(&t.IKey, "ikey", "", "GRE key received packets must carry (instead of --key)")
	fs.StringVar(&t.OKey, "okey", "", "GRE key sent (instead of --key)")
	fs.StringVar(&t.TTL, "ttl", "", "outer TTL: 1..255 or inherit (default 64)")
	fs.StringVar(&t.TOS, "tos", "", "outer TOS: inherit or 0..255 (default inherit; ECN always follows the inner header)")
	fs.BoolVar(&t.Seq, "seq", false, "send GRE sequence numbers and drop received packets out of order (--iseq and --oseq)")
	fs.BoolVar(&t.ISeq, "iseq", false, "drop received packets without a sequence number or out of order")
	fs.BoolVar(&t.OSeq, "oseq", false, "send sequence numbers (the tunnel interface then segments in software, as ip_gre)")
	fs.BoolVar(&t.Csum, "csum", false, "send GRE checksums and take only packets with a right one (--icsum and --ocsum)")
	fs.BoolVar(&t.ICsum, "icsum", false, "take only received packets with a GRE checksum, and check it")
	fs.BoolVar(&t.OCsum, "ocsum", false, "send GRE checksums (the tunnel interface then segments in software)")
	fs.StringVar(&t.PMTUDisc, "pmtudisc", "", "outer DF: on (always set, the default) or off (copied from the inner packet; needs --ttl inherit)")
	fs.StringVar(&t.RPFilter, "rp-filter", "", "inner source check on decapsulated packets: strict, loose or off (default strict)")
	fs.StringVar(&t.Overlay, "overlay", "", "this side's tunnel address")
	fs.StringVar(&t.Peer, "peer", "", "the other side's tunnel address")
	fs.Var(&routes, "route", "inner prefix to send through the tunnel (repeatable)")
	fs.DurationVar(&loader.LockWait, "wait", loader.LockWait, "how long to wait while another grebpf attaches or detaches in the namespace")
	fs.Var(&fastpath, "fastpath", "LAN device to put the XDP fast path on (repeatable); decap then runs in XDP and forwards too")
	if err := parse(fs, args); err != nil {
		return r, err
	}
	t.Routes = routes
	r.FastPath = fastpath
	tunnelFlags := false
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "name", "local", "remote", "key", "ttl", "tos", "overlay", "peer", "route", "rp-filter":
			tunnelFlags = true
		}
	})
	if file == "" {
		if site != "" {
			return r, errors.New("attach: --site picks a part of a config file: give --config FILE too")
		}
		if tunnelFlags {
			r.Tunnels = []config.Tunnel{t}
		}
		return r, nil
	}
	if tunnelFlags {
		return r, errors.New("attach: give either --config or tunnel flags, not both")
	}
	fromFile, err := config.Load(file, site)
	if err != nil {
		return r, err
	}
	// Flags given next to --config override the file's device-level settings.
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "dev":
			fromFile.Device = r.Device
		case "mode":
			fromFile.Mode = r.Mode
		case "decap":
			fromFile.Decap = r.Decap
		case "encap":
			fromFile.Encap = r.Encap
		case "xdp-generic":
			fromFile.XDPGeneric = r.XDPGeneric
		case "tc":
			fromFile.TC = r.TC
		case "fastpath":
			fromFile.FastPath = r.FastPath
		}
	})
	return fromFile, nil
}

func runAttach(g *globals, args []string) error {
	r, err := attachRouter(g, args)
	if err != nil {
		return err
	}
	ns, err := g.nsName()
	if err != nil {
		return err
	}
	rep, err := loader.AttachWith(ns, r)
	if rep.Recovered != "" {
		fmt.Fprintf(g.err, "grebpf: %s\n", rep.Recovered)
	}
	if err != nil {
		return err
	}
	if r.Mode == config.ModeKernel {
		fmt.Fprintf(g.out, "grebpf: attached on %s in %s with ip_gre (mode kernel)\n", r.Device, ns)
		return nil
	}
	verb := "attached"
	if !rep.Changed {
		verb = "already attached, nothing changed"
	}
	mode := "decap " + rep.Decap
	if rep.XDPMode != "" {
		mode += " (" + rep.XDPMode + ")"
	}
	fast := ""
	if len(rep.FastPath) > 0 {
		fast = ", XDP fast path on " + strings.Join(rep.FastPath, ", ")
	}
	fmt.Fprintf(g.out, "grebpf: %s on %s in %s, %s, encap %s via %s%s\n", verb, rep.Device, ns, mode, rep.Encap, rep.TC, fast)
	return nil
}
