package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"net/netip"
	"strings"
	"text/tabwriter"

	"github.com/grebpf/grebpf/internal/config"
	"github.com/grebpf/grebpf/internal/tunnel"
	"github.com/grebpf/grebpf/loader"
	"github.com/grebpf/grebpf/maps"
)

type showTunnel struct {
	Name    string `json:"name"`
	Ifindex uint32 `json:"ifindex"`
	Local   string `json:"local"`
	Remote  string `json:"remote"`
	// Key is the GRE key when the same both ways; IKey is the key
	// received packets carry, OKey the one sent.
	Key     *uint32 `json:"key"`
	IKey    *uint32 `json:"ikey"`
	OKey    *uint32 `json:"okey"`
	TTL     string  `json:"ttl"`
	TOS     string  `json:"tos"`
	Overlay string  `json:"overlay"`
	Peer    string  `json:"peer"`
	// Overlay6 and Peer6 are the IPv6 overlay addresses; empty when the
	// tunnel carries IPv4 only.
	Overlay6 string `json:"overlay6"`
	Peer6    string `json:"peer6"`
	MTU      uint16 `json:"mtu"`
	// RPFilter is the inner source check on what the tunnel receives.
	RPFilter string `json:"rp_filter"`
	// PMTUDisc is on (outer DF always set) or off (copied from the inner).
	PMTUDisc string `json:"pmtudisc"`
	// EncapLimit is, over IPv6, the encapsulation limit option sent
	// ("none" for none); empty over IPv4.
	EncapLimit string `json:"encaplimit"`
	// ISeq: received packets must be numbered in order; OSeq: sent ones are numbered.
	ISeq bool `json:"iseq"`
	OSeq bool `json:"oseq"`
	// ICsum: received packets must carry a right GRE checksum; OCsum: sent ones carry one.
	ICsum bool `json:"icsum"`
	OCsum bool `json:"ocsum"`
	pathMTU
	// Health is up, down or probing while grebpf run probes the tunnel,
	// else empty.
	Health string `json:"health"`
}

// pathMTU is what ICMP taught about the path to a tunnel's remote: 0 when
// nothing holds, else the outer path MTU and its seconds left (0 where
// the kernel does not say).
type pathMTU struct {
	PathMTU        uint32 `json:"path_mtu"`
	PathMTUExpires int64  `json:"path_mtu_expires_seconds"`
}

func pathMTUOf(t loader.TunnelState) pathMTU {
	return pathMTU{t.PathMTU, int64(t.PathMTUExpires.Seconds())}
}

func (p pathMTU) String() string {
	switch {
	case p.PathMTU == 0:
		return "-"
	case p.PathMTUExpires == 0:
		return fmt.Sprint(p.PathMTU)
	}
	return fmt.Sprintf("%d (%ds left)", p.PathMTU, p.PathMTUExpires)
}

type showRoute struct {
	Prefix string `json:"prefix"`
	Tunnel string `json:"tunnel"`
}

type showOut struct {
	Netns    string   `json:"netns"`
	Mode     string   `json:"mode"`
	Device   string   `json:"device"`
	Decap    string   `json:"decap"`
	Encap    string   `json:"encap,omitempty"`
	XDPMode  string   `json:"xdp_mode,omitempty"`
	GRO      bool     `json:"gro_turned_on"`
	TC       string   `json:"tc"`
	TCX      bool     `json:"kernel_tcx"`
	FastPath []string `json:"fastpath"`
	Pins     string   `json:"pins"`
	// TunnelCapacity is how many tunnels the maps hold (BPF mode).
	TunnelCapacity int          `json:"tunnel_capacity,omitempty"`
	Tunnels        []showTunnel `json:"tunnels"`
	Routes         []showRoute  `json:"routes"`
	// Problems stop or slow the tunnels' traffic now; each names its fix.
	Problems []string `json:"problems"`
}

func showCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show",
		Short: "Tunnels, routes, attach mode, kernel features in use and problems",
		RunE:  func(*cobra.Command, []string) error { return show(g, asJSON) },
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	return rootCommand(cmd, true)
}

func show(g *globals, asJSON bool) error {
	st, err := g.state()
	if err != nil {
		return err
	}
	ns := st.Netns
	out := showOut{
		Netns: ns, Mode: st.Mode, Device: st.Device, Decap: st.DecapName(), TC: st.TCName(),
		GRO: st.Attachment.Flags&maps.AttachGROOwned != 0, TCX: loader.HaveTCX(), Pins: st.Dir, FastPath: st.FastPath,
		Tunnels: []showTunnel{}, Routes: []showRoute{}, Problems: st.Problems,
	}
	if out.Problems == nil {
		out.Problems = []string{}
	}
	if out.Mode != config.ModeKernel {
		out.Encap = st.EncapName()
		out.TunnelCapacity = loader.MaxTunnels()
	}
	if out.Decap == "xdp" {
		out.XDPMode = "native"
		if st.Attachment.Flags&maps.AttachXDPGeneric != 0 {
			out.XDPMode = "generic"
		}
	}
	for _, t := range st.Tunnels {
		ttl, tos := fmt.Sprint(t.TTL), fmt.Sprint(t.TOS)
		if t.TTL == 0 {
			ttl = "inherit"
		}
		if t.TOSInherit {
			tos = "inherit"
		}
		var key *uint32
		if tunnel.SameKey(t.IKey, t.OKey) {
			key = t.OKey
		}
		out.Tunnels = append(out.Tunnels, showTunnel{t.Name, t.Link.Ifindex, t.Local.String(), t.Remote.String(), key, t.IKey, t.OKey,
			ttl, tos, t.OverlayLocal.String(), t.OverlayRemote.String(), addrString(t.Overlay6Local), addrString(t.Overlay6Remote), t.MTU, t.RPFilter.String(), map[bool]string{false: "on", true: "off"}[t.NoPMTUDisc], encapLimitName(t.Tunnel), t.ISeq, t.OSeq, t.ICsum, t.OCsum, pathMTUOf(t), t.Health})
	}
	for _, r := range st.Routes {
		out.Routes = append(out.Routes, showRoute{r.Prefix.String(), r.Tunnel})
	}
	if asJSON {
		return g.printJSON(out)
	}
	decap := out.Decap
	if out.XDPMode != "" {
		decap += " " + out.XDPMode
		if out.GRO {
			decap += ", GRO turned on"
		}
	} else {
		decap += " ingress"
	}
	fmt.Fprintf(g.out, "netns %s  device %s  mode %s\n", out.Netns, out.Device, out.Mode)
	if out.Mode == config.ModeKernel {
		fmt.Fprintf(g.out, "ip_gre netdevs named after the tunnels\n\n")
	} else {
		fmt.Fprintf(g.out, "decap %s  encap on each tunnel interface's %s  tc attach %s\n", decap, encapWhere[out.Encap], out.TC)
		if len(out.FastPath) > 0 {
			fmt.Fprintf(g.out, "XDP fast path on %s (WAN forwards after decap)\n", strings.Join(out.FastPath, ", "))
		}
		fmt.Fprintf(g.out, "kernel: tcx %s\n", yesNo(out.TCX))
		fmt.Fprintf(g.out, "tunnels %d of %d this build's maps hold\n", len(out.Tunnels), out.TunnelCapacity)
		fmt.Fprintf(g.out, "pins %s\n\n", out.Pins)
	}
	for _, p := range out.Problems {
		fmt.Fprintf(g.out, "problem: %s\n", p)
	}
	if len(out.Problems) > 0 {
		fmt.Fprintln(g.out)
	}
	w := tabwriter.NewWriter(g.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "TUNNEL\tLOCAL\tREMOTE\tKEY\tTTL\tTOS\tOVERLAY\tPEER\tMTU\tRP-FILTER\tPATH-MTU\tHEALTH")
	for _, t := range out.Tunnels {
		key := "none"
		switch {
		case t.Key != nil:
			key = fmt.Sprint(*t.Key)
		case t.IKey != nil || t.OKey != nil:
			key = "in " + keyName(t.IKey) + ", out " + keyName(t.OKey)
		}
		overlay, peer := t.Overlay, t.Peer
		if t.Overlay6 != "" {
			overlay, peer = overlay+","+t.Overlay6, peer+","+t.Peer6
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", t.Name, t.Local, t.Remote, key, t.TTL, t.TOS, overlay, peer, t.MTU, t.RPFilter, t.pathMTU, orDash(t.Health))
	}
	w.Flush()
	fmt.Fprintln(g.out)
	w = tabwriter.NewWriter(g.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "ROUTE\tTUNNEL")
	for _, r := range out.Routes {
		fmt.Fprintf(w, "%s\t%s\n", r.Prefix, r.Tunnel)
	}
	return w.Flush()
}

func encapLimitName(t tunnel.Tunnel) string {
	switch {
	case !t.Local.Is6():
		return ""
	case t.EncapLimit < 0:
		return "none"
	}
	return fmt.Sprint(t.EncapLimit)
}

// addrString is "" for no address.
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func keyName(k *uint32) string {
	if k == nil {
		return "none"
	}
	return fmt.Sprint(*k)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// encapWhere says where each encap attach point is, for show.
var encapWhere = map[string]string{config.EncapPeer: "veth peer", config.EncapEgress: "egress"}
