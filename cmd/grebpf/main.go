// Command grebpf runs a GRE tunnel whose data plane is eBPF.
//
//	grebpf [--netns NAME] attach|detach|run|stats|show …
//	grebpf lab up|down|config, grebpf bench
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/grebpf/grebpf/internal/netns"
	"github.com/grebpf/grebpf/loader"
)

// globals are what every command shares: the root's flags and where
// output goes.
type globals struct {
	netns string
	out   io.Writer
	err   io.Writer // progress, warnings and logs
	// leaveNetns returns the thread to its namespace after the command.
	leaveNetns func() error
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "grebpf: %v\n", oneLine(err))
		os.Exit(1)
	}
}

// oneLine keeps an error to one line however many causes it joins.
func oneLine(err error) string {
	var parts []string
	for _, l := range strings.Split(err.Error(), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, "; ")
}

func run(args []string, out io.Writer) error {
	g := &globals{out: out, err: os.Stderr}
	root := newRoot(g)
	root.SetArgs(append([]string{}, args...)) // never nil: nil makes cobra read os.Args
	_, err := root.ExecuteC()
	if g.leaveNetns != nil {
		g.leaveNetns()
	}
	if err != nil && strings.HasPrefix(err.Error(), "unknown command") {
		return fmt.Errorf("%w\nrun grebpf --help for the commands", err)
	}
	return err
}

// needsRoot marks a command that changes or reads BPF and netlink state;
// netnsAware one that acts inside --netns (the others build their own
// namespaces).
const (
	needsRoot  = "grebpf/root"
	netnsAware = "grebpf/netns"
)

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "grebpf",
		Short: "GRE tunnels whose data plane is eBPF",
		Long: `grebpf runs GRE tunnels (RFC 2784/2890, over IPv4 or IPv6) with an eBPF data
plane on a router's WAN device: XDP or TC programs decapsulate and
encapsulate, and an optional XDP fast path forwards without the kernel stack.
Each tunnel is an interface (gre1, ...) that routes, routing daemons,
firewalls and tcpdump use as they would an ip_gre one.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.SetOut(g.err)
			cmd.Usage()
			return errors.New("no command given: run grebpf --help for the commands")
		},
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Annotations[needsRoot] != "" {
				if err := checkPrivileges(); err != nil {
					return err
				}
			}
			if g.netns == "" {
				return nil
			}
			if cmd.Annotations[netnsAware] == "" {
				if cmd.Annotations[needsRoot] != "" {
					return fmt.Errorf("%s builds its own lab: drop --netns", cmd.Name())
				}
				return fmt.Errorf("%s does not act in a namespace: drop --netns", cmd.CommandPath())
			}
			restore, err := netns.Enter(g.netns)
			if err != nil {
				return err
			}
			g.leaveNetns = restore
			return nil
		},
	}
	root.SetOut(g.out)
	root.SetErr(g.err)
	root.PersistentFlags().StringVar(&g.netns, "netns", "", "act in the named network namespace (ip netns)")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return fmt.Errorf("%w: run %s --help for its flags", err, cmd.CommandPath())
	})
	root.AddCommand(attachCmd(g), detachCmd(g), runCmd(g), statsCmd(g), showCmd(g), labCmd(g), benchCmd(g), versionCmd(g), manCmd(g))
	return root
}

// rootCommand marks cmd as needing root, and as acting in --netns if
// inNetns.
func rootCommand(cmd *cobra.Command, inNetns bool) *cobra.Command {
	if cmd.Annotations == nil {
		cmd.Annotations = map[string]string{}
	}
	cmd.Annotations[needsRoot] = "yes"
	if inNetns {
		cmd.Annotations[netnsAware] = "yes"
	}
	cmd.Args = cobra.NoArgs
	return cmd
}

// nsName names the namespace the command acts on, for pins and messages.
func (g *globals) nsName() (string, error) {
	if g.netns != "" {
		return g.netns, nil
	}
	return netns.Current()
}

// state reads the data plane of the namespace the command acts on.
func (g *globals) state() (loader.State, error) {
	ns, err := g.nsName()
	if err != nil {
		return loader.State{}, err
	}
	if b := loader.AttachedBackend(ns); b != nil {
		st, err := b.State(ns)
		health := loader.Health(ns)
		for i := range st.Tunnels {
			st.Tunnels[i].Health = health[st.Tunnels[i].Name]
		}
		return st, err
	}
	return loader.ReadState(ns) // says that nothing is attached, and what to do
}

func (g *globals) printJSON(v any) error {
	enc := json.NewEncoder(g.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// checkPrivileges wants CAP_BPF (or CAP_SYS_ADMIN on kernels before it)
// and CAP_NET_ADMIN in the effective set.
func checkPrivileges() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("read capabilities: %w", err)
	}
	has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	if !has(unix.CAP_NET_ADMIN) || !(has(unix.CAP_BPF) || has(unix.CAP_SYS_ADMIN)) {
		return errors.New("needs root (CAP_BPF and CAP_NET_ADMIN): run it with sudo")
	}
	return nil
}
