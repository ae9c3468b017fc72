package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/grebpf/grebpf/internal/config"
	"github.com/grebpf/grebpf/loader"
)

// routerFlags are the flags that describe a router, shared by attach
// and run: either --config FILE (with --site), or one tunnel in flags.
type routerFlags struct {
	flags    *pflag.FlagSet
	r        config.Router
	t        config.Tunnel
	file     string
	site     string
	routes   []string
	fastpath []string
}

// tunnelFlagNames are the flags that describe the one tunnel given
// without --config.
var tunnelFlagNames = []string{"name", "local", "remote", "encaplimit", "key", "ikey", "okey", "ttl", "tos", "overlay", "peer", "overlay6", "peer6", "route", "rp-filter",
	"pmtudisc", "seq", "iseq", "oseq", "csum", "icsum", "ocsum"}

func addRouterFlags(cmd *cobra.Command) *routerFlags {
	rf := &routerFlags{flags: cmd.Flags()}
	fs, r, t := rf.flags, &rf.r, &rf.t
	fs.StringVar(&rf.file, "config", "", "YAML file describing the router (device, tunnels, routes), or several under sites:")
	fs.StringVar(&rf.site, "site", "", "with --config: the part of the file under sites: to attach")
	fs.StringVar(&r.Device, "dev", "", "WAN device")
	fs.StringVar(&r.Mode, "mode", "", "bpf (default) or kernel (an ip_gre netdev per tunnel: the fallback)")
	fs.StringVar(&r.Decap, "decap", "", "where to decapsulate: auto, xdp or tc (default auto: tc on veth, xdp elsewhere)")
	fs.StringVar(&r.Encap, "encap", "", "where to encapsulate: peer (the tunnel interface's veth peer: the interface counts and shows what it sends) or egress (the interface's own egress: one veth crossing less, the interface shows nothing sent); default peer")
	fs.BoolVar(&r.XDPGeneric, "xdp-generic", false, "attach XDP in generic (skb) mode")
	fs.StringVar(&r.TC, "tc", "", "TC attach: auto, tcx or clsact (default auto: tcx where the kernel has it)")
	fs.StringVar(&t.Name, "name", "", "tunnel name (default gre1)")
	fs.StringVar(&t.Local, "local", "", "outer source address (this router's WAN address), IPv4 or IPv6")
	fs.StringVar(&t.Remote, "remote", "", "outer destination address (the peer's WAN address), of the same family")
	fs.StringVar(&t.EncapLimit, "encaplimit", "", "over IPv6: the tunnel encapsulation limit option sent, 0..255 or none (default 4, as ip6gre)")
	fs.StringVar(&t.Key, "key", "", "GRE key (RFC 2890) sent and required; none if empty")
	fs.StringVar(&t.IKey, "ikey", "", "GRE key received packets must carry (instead of --key)")
	fs.StringVar(&t.OKey, "okey", "", "GRE key sent (instead of --key)")
	fs.StringVar(&t.TTL, "ttl", "", "outer TTL or hop limit: 1..255 or inherit (default 64)")
	fs.StringVar(&t.TOS, "tos", "", "outer TOS or traffic class: inherit or 0..255 (default inherit; ECN always follows the inner header)")
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
	fs.StringVar(&t.Overlay6, "overlay6", "", "this side's IPv6 tunnel address, for a tunnel that carries IPv6 too")
	fs.StringVar(&t.Peer6, "peer6", "", "the other side's IPv6 tunnel address")
	fs.StringArrayVar(&rf.routes, "route", nil, "inner prefix to send through the tunnel, IPv4 or (with --overlay6) IPv6 (repeatable)")
	fs.DurationVar(&loader.LockWait, "wait", loader.LockWait, "how long to wait while another grebpf attaches or detaches in the namespace")
	fs.StringArrayVar(&rf.fastpath, "fastpath", nil, "LAN device to put the XDP fast path on (repeatable); decap then runs in XDP and forwards too")
	completeWords(cmd, "mode", config.ModeBPF, config.ModeKernel)
	completeWords(cmd, "decap", "auto", "xdp", "tc")
	completeWords(cmd, "encap", "peer", "egress")
	completeWords(cmd, "tc", "auto", "tcx", "clsact")
	completeWords(cmd, "pmtudisc", "on", "off")
	completeWords(cmd, "rp-filter", "strict", "loose", "off")
	cmd.MarkFlagFilename("config", "yaml", "yml")
	return rf
}

// completeWords offers the words a flag takes to shell completion.
func completeWords(cmd *cobra.Command, flag string, words ...string) {
	cmd.RegisterFlagCompletionFunc(flag, cobra.FixedCompletions(words, cobra.ShellCompDirectiveNoFileComp))
}

// router reads the router the flags describe; with --config, the file is
// read again at each call, so a reload sees its changes.
func (rf *routerFlags) router() (config.Router, error) {
	r, t := rf.r, rf.t
	t.Routes = rf.routes
	r.FastPath = rf.fastpath
	tunnelFlags := false
	for _, name := range tunnelFlagNames {
		tunnelFlags = tunnelFlags || rf.flags.Changed(name)
	}
	if rf.file == "" {
		if rf.site != "" {
			return r, errors.New("--site picks a part of a config file: give --config FILE too")
		}
		if tunnelFlags {
			r.Tunnels = []config.Tunnel{t}
		}
		return r, nil
	}
	if tunnelFlags {
		return r, errors.New("give either --config or tunnel flags, not both")
	}
	fromFile, err := config.Load(rf.file, rf.site)
	if err != nil {
		return r, err
	}
	// Flags given next to --config override the file's device-level settings.
	for name, apply := range map[string]func(){
		"dev":         func() { fromFile.Device = r.Device },
		"mode":        func() { fromFile.Mode = r.Mode },
		"decap":       func() { fromFile.Decap = r.Decap },
		"encap":       func() { fromFile.Encap = r.Encap },
		"xdp-generic": func() { fromFile.XDPGeneric = r.XDPGeneric },
		"tc":          func() { fromFile.TC = r.TC },
		"fastpath":    func() { fromFile.FastPath = r.FastPath },
	} {
		if rf.flags.Changed(name) {
			apply()
		}
	}
	return fromFile, nil
}

func attachCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "attach (--config FILE [--site NAME] | --dev WAN --local A --remote B --overlay X --peer Y --route PREFIX...)",
		Short: "Load the data plane on a WAN device and set up tunnels and routes",
		Long: `attach loads the data plane on the WAN device and sets up each tunnel's
interface, addresses and routes, as one transaction: a failure at any step
leaves what was there before. Run again with a changed router, it applies
the difference; with the same one, it changes nothing.`,
		Example: `  grebpf --netns r1 attach --dev wan1 --local 10.100.0.1 --remote 10.200.0.1 \
      --overlay 192.168.1.1 --peer 192.168.1.2 --route 172.16.200.0/24
  grebpf attach --config /etc/grebpf/grebpf.yaml`,
	}
	rf := addRouterFlags(cmd)
	cmd.RunE = func(*cobra.Command, []string) error {
		r, err := rf.router()
		if err != nil {
			return fmt.Errorf("attach: %w", err)
		}
		return attach(g, r)
	}
	return rootCommand(cmd, true)
}

// attach applies r in the command's namespace and says what it did.
func attach(g *globals, r config.Router) error {
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
