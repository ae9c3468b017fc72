// Command grebpf runs a GRE tunnel whose data plane is eBPF.
//
//	grebpf [--netns NAME] attach|detach|stats|show …
//	grebpf lab up [--tunnel none|bpf|kernel] | lab down
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/grebpf/grebpf/internal/netns"
	"github.com/grebpf/grebpf/loader"
)

const usage = `usage: grebpf [--netns NAME] COMMAND [flags]

commands:
  attach   load the data plane on a WAN device and configure tunnels and routes
  detach   remove everything attach created
  stats    per-tunnel traffic and per-reason drop/pass counters
  show     tunnels, routes, attach mode and kernel features in use
  lab      lab up [--tunnel none|bpf|kernel] [--fastpath] | lab down: the built-in site-to-site lab
  bench    pps and TCP of each mode on the lab, against ip_gre or kernel routing

Run "grebpf COMMAND --help" for a command's flags.
`

type command struct {
	run func(g *globals, args []string) error
	// root says whether the command changes or reads BPF/netlink state.
	root bool
}

var commands = map[string]command{
	"attach": {runAttach, true},
	"detach": {runDetach, true},
	"stats":  {runStats, true},
	"show":   {runShow, true},
	"lab":    {runLab, true},
	"bench":  {runBench, true},
}

// globals are the flags before the command name.
type globals struct {
	netns string
	out   io.Writer
	err   io.Writer // progress and warnings
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "grebpf: %v\n", oneLine(err))
		os.Exit(1)
	}
}

// oneLine keeps an error to one line however many causes it joins.
func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}

func run(args []string, out io.Writer) error {
	g := &globals{out: out, err: os.Stderr}
	fs := flag.NewFlagSet("grebpf", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&g.netns, "netns", "", "run in the named network namespace (ip netns)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%v\n%s", err, usage)
	}
	if fs.NArg() == 0 {
		fmt.Fprint(out, usage)
		return errors.New("no command given")
	}
	name := fs.Arg(0)
	cmd, ok := commands[name]
	if !ok {
		return fmt.Errorf("unknown command %q: use attach, detach, stats, show or lab", name)
	}
	if cmd.root {
		if err := checkPrivileges(); err != nil {
			return err
		}
	}
	if g.netns != "" && name != "lab" && name != "bench" {
		restore, err := netns.Enter(g.netns)
		if err != nil {
			return err
		}
		defer restore()
	}
	if err := cmd.run(g, fs.Args()[1:]); !errors.Is(err, errHelp) {
		return err
	}
	return nil
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
		return b.State(ns)
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

// newFlags makes a subcommand's flag set; --help prints its flags.
func newFlags(g *globals, name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(g.out)
	fs.Usage = func() {
		fmt.Fprintf(g.out, "usage: grebpf [--netns NAME] %s\n\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags and refuses stray arguments.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	return nil
}

var errHelp = errors.New("help requested")
