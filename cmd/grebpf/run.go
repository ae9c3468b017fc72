package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/spf13/cobra"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/grebpf/grebpf/internal/config"
	"github.com/grebpf/grebpf/loader"
)

type runOptions struct {
	detachOnExit bool
	metricsAddr  string
	progStats    bool
	logFormat    string
	logLevel     string
	// health flags, over the config's health: section
	interval string
	misses   int
	withdraw bool
}

func runCmd(g *globals) *cobra.Command {
	var o runOptions
	cmd := &cobra.Command{
		Use:   "run (--config FILE [--site NAME] | tunnel flags as attach)",
		Short: "Attach, then stay in the foreground: reload on SIGHUP, metrics, tunnel health",
		Long: `run attaches as attach does, then stays in the foreground as a service:

  SIGHUP    reads the config again and attaches again (one transaction: a
            config that fails leaves the running one in place)
  SIGTERM   exits 0 and leaves the data plane in place (--detach-on-exit
            removes it), so a restart does not drop traffic

It probes each tunnel's peer address with an ICMP echo through the tunnel
every health interval, marks a tunnel down after that many misses in a row
and up on the next answer, and with withdraw takes a down tunnel's routes
out of the kernel so a backup route or a routing daemon takes over. It
follows changes in the kernel that a new attach fixes (see grebpf show),
logs structured lines to stderr, serves Prometheus metrics on
--metrics-addr, and tells systemd when it is ready (Type=notify).`,
		Example: `  grebpf run --config /etc/grebpf/grebpf.yaml --metrics-addr 127.0.0.1:9477
  systemctl reload grebpf   # SIGHUP`,
	}
	rf := addRouterFlags(cmd)
	fs := cmd.Flags()
	fs.BoolVar(&o.detachOnExit, "detach-on-exit", false, "detach when stopped, instead of leaving the data plane in place")
	fs.StringVar(&o.metricsAddr, "metrics-addr", "", "serve Prometheus metrics on HOST:PORT (/metrics, and /healthz), in the namespace grebpf acts in")
	fs.BoolVar(&o.progStats, "prog-stats", false, "turn on the kernel's BPF run-time statistics while running, for the program metrics (two clock reads a packet)")
	fs.StringVar(&o.logFormat, "log-format", "text", "log lines as text (logfmt) or json")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.interval, "health-interval", "", "time between probes of each tunnel, 0 for none (health: interval; default 1s)")
	fs.IntVar(&o.misses, "health-misses", 0, "probes missed in a row that mark a tunnel down (health: misses; default 3)")
	fs.BoolVar(&o.withdraw, "health-withdraw", false, "take a down tunnel's routes out of the kernel until it is up (health: withdraw)")
	completeWords(cmd, "log-format", "text", "json")
	completeWords(cmd, "log-level", "debug", "info", "warn", "error")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		log, err := newLogger(g, o)
		if err != nil {
			return err
		}
		ns, err := g.nsName()
		if err != nil {
			return err
		}
		d := &daemon{g: g, ns: ns, rf: rf, o: o, log: log, cmd: cmd}
		return d.run()
	}
	return rootCommand(cmd, true)
}

func newLogger(g *globals, o runOptions) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return nil, fmt.Errorf("run: --log-level %q: use debug, info, warn or error", o.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch o.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(g.err, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(g.err, opts)), nil
	}
	return nil, fmt.Errorf("run: --log-format %q: use text or json", o.logFormat)
}

// daemon is grebpf run. Everything that touches the namespace (netlink,
// sockets, attach) happens on the goroutine that entered it, in run's
// loop: the others ask it through channels.
type daemon struct {
	g   *globals
	ns  string
	rf  *routerFlags
	o   runOptions
	log *slog.Logger
	cmd *cobra.Command

	router   config.Router // the one applied last
	interval time.Duration
	misses   int
	withdraw bool
	probes   map[string]*probe
	replies  chan probeReply
	scrapes  chan chan snapshot
	problems []string
	tried    map[string]bool   // problems an attach was run for
	reloads  map[string]uint64 // ok | error
}

// routerWithHealth reads the router from the flags or file, with the
// health flags over its health: section.
func (d *daemon) routerWithHealth() (config.Router, error) {
	r, err := d.rf.router()
	if err != nil {
		return r, err
	}
	fs := d.cmd.Flags()
	if fs.Changed("health-interval") {
		r.Health.Interval = d.o.interval
	}
	if fs.Changed("health-misses") {
		r.Health.Misses = d.o.misses
	}
	if fs.Changed("health-withdraw") {
		r.Health.Withdraw = d.o.withdraw
	}
	return r, nil
}

// apply attaches r and, once it is in, starts probing as r says.
func (d *daemon) apply(r config.Router) error {
	interval, misses, err := r.Health.Probe()
	if err != nil {
		return err
	}
	rep, err := loader.AttachWith(d.ns, r)
	if rep.Recovered != "" {
		d.log.Warn("recovered an interrupted attach", "what", rep.Recovered)
	}
	if err != nil {
		return err
	}
	d.router, d.interval, d.misses, d.withdraw = r, interval, misses, r.Health.Withdraw
	d.log.Info("attached", "netns", d.ns, "device", r.Device, "mode", orDefault(r.Mode, config.ModeBPF), "changed", rep.Changed,
		"decap", rep.Decap, "encap", rep.Encap, "tunnels", len(r.Tunnels))
	if err := d.startProbes(); err != nil {
		return err
	}
	return d.applyWithdrawal()
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func (d *daemon) run() error {
	d.replies = make(chan probeReply, 64)
	d.scrapes = make(chan chan snapshot)
	d.reloads = map[string]uint64{"ok": 0, "error": 0}
	d.tried = map[string]bool{}
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(signals)

	r, err := d.routerWithHealth()
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	// Listening first: an address that cannot be refuses run before
	// anything is attached.
	httpErr := make(chan error, 1)
	if d.o.metricsAddr != "" {
		srv, err := d.serveMetrics(httpErr)
		if err != nil {
			return err
		}
		defer srv.Close()
	}
	if d.o.progStats {
		stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
		if err != nil {
			return fmt.Errorf("run: --prog-stats: %w: this kernel cannot count BPF program runs", err)
		}
		defer stats.Close()
	}
	if err := d.apply(r); err != nil {
		return err
	}
	defer d.stopProbes()
	defer loader.RemoveHealth(d.ns)
	changes, stopWatching, err := watchKernel()
	if err != nil {
		return err
	}
	defer stopWatching()
	d.problems = d.currentProblems()
	sdNotify("READY=1\nSTATUS=attached")
	d.log.Info("running", "pid", os.Getpid(), "metrics", d.o.metricsAddr, "health_interval", d.interval, "health_misses", d.misses, "withdraw", d.withdraw)

	tick := time.NewTicker(time.Hour)
	defer tick.Stop()
	resetTick := func() {
		if d.interval > 0 {
			tick.Reset(d.interval)
		} else {
			tick.Stop()
		}
	}
	resetTick()
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	for {
		select {
		case sig := <-signals:
			if sig == syscall.SIGHUP {
				d.reload()
				resetTick()
				continue
			}
			return d.stop(sig)
		case <-tick.C:
			d.probeRound()
		case rep := <-d.replies:
			d.answered(rep)
		case <-changes:
			// Changes come in bursts (a link going down takes its
			// addresses and routes along): look once it has settled.
			settle.Reset(time.Second)
		case <-settle.C:
			d.followChanges()
		case reply := <-d.scrapes:
			reply <- d.snapshot()
		case err := <-httpErr:
			return fmt.Errorf("metrics server on %s: %w", d.o.metricsAddr, err)
		}
	}
}

// reload is SIGHUP: the config read again and attached again; a failure
// leaves what runs in place.
func (d *daemon) reload() {
	sdNotify("RELOADING=1")
	defer sdNotify("READY=1")
	d.log.Info("reloading", "config", d.rf.file)
	r, err := d.routerWithHealth()
	if err == nil {
		err = d.apply(r)
	}
	if err != nil {
		d.reloads["error"]++
		d.log.Error("reload failed; the running config stays in place", "error", oneLine(err))
		return
	}
	d.reloads["ok"]++
}

func (d *daemon) stop(sig os.Signal) error {
	sdNotify("STOPPING=1")
	if !d.o.detachOnExit {
		d.log.Info("stopping; the data plane stays in place", "signal", sig.String())
		return nil
	}
	if _, err := loader.DetachWith(d.ns); err != nil && !errors.Is(err, loader.ErrNotAttached) {
		return fmt.Errorf("detach on exit: %w", err)
	}
	d.log.Info("stopping; detached", "signal", sig.String())
	return nil
}

// currentProblems are what show would report now.
func (d *daemon) currentProblems() []string {
	st, err := d.g.state()
	if err != nil {
		return []string{oneLine(err)}
	}
	return st.Problems
}

// followChanges looks at the kernel after a change: new problems are
// logged, and one a new attach fixes is fixed so.
func (d *daemon) followChanges() {
	now := d.currentProblems()
	for _, p := range now {
		if !slices.Contains(d.problems, p) {
			d.log.Warn("problem", "what", p)
		}
	}
	for _, p := range d.problems {
		if !slices.Contains(now, p) {
			d.log.Info("problem gone", "what", p)
		}
	}
	d.problems = now
	for p := range d.tried {
		if !slices.Contains(now, p) {
			delete(d.tried, p)
		}
	}
	for _, p := range now {
		// Once per problem: one that an attach did not fix is left to
		// the log and show, not retried on every change the attach
		// itself makes.
		if strings.Contains(p, loader.AttachAgain) && !d.tried[p] {
			d.tried[p] = true
			d.log.Info("attaching again to follow the change", "what", p)
			if err := d.apply(d.router); err != nil {
				d.reloads["error"]++
				d.log.Error("attach again failed", "error", oneLine(err))
			} else {
				d.reloads["ok"]++
			}
			d.problems = d.currentProblems()
			return
		}
	}
}

// watchKernel reports link and address changes in the namespace.
func watchKernel() (<-chan struct{}, func(), error) {
	out := make(chan struct{}, 1)
	done := make(chan struct{})
	links := make(chan netlink.LinkUpdate, 64)
	addrs := make(chan netlink.AddrUpdate, 64)
	if err := netlink.LinkSubscribe(links, done); err != nil {
		return nil, nil, fmt.Errorf("watch links: %w", err)
	}
	if err := netlink.AddrSubscribe(addrs, done); err != nil {
		close(done)
		return nil, nil, fmt.Errorf("watch addresses: %w", err)
	}
	poke := func() {
		select {
		case out <- struct{}{}:
		default:
		}
	}
	go func() {
		for {
			select {
			case _, ok := <-links:
				if !ok {
					return
				}
				poke()
			case _, ok := <-addrs:
				if !ok {
					return
				}
				poke()
			case <-done:
				return
			}
		}
	}()
	return out, func() { close(done) }, nil
}

// sdNotify tells systemd of the service's state when it runs under
// Type=notify; elsewhere it does nothing.
func sdNotify(state string) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return
	}
	if strings.HasPrefix(addr, "@") {
		addr = "\x00" + addr[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return
	}
	defer c.Close()
	c.Write([]byte(state))
}

// serveMetrics listens on --metrics-addr (in the namespace: the socket is
// made on this thread) and serves in the background.
func (d *daemon) serveMetrics(failed chan<- error) (*http.Server, error) {
	ln, err := net.Listen("tcp", d.o.metricsAddr)
	if err != nil {
		return nil, fmt.Errorf("run: --metrics-addr %s: %w", d.o.metricsAddr, err)
	}
	srv := &http.Server{Handler: d.metricsHandler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			failed <- err
		}
	}()
	return srv, nil
}

// ask gets a snapshot from run's loop, or says it did not answer.
func (d *daemon) ask(ctx context.Context) (snapshot, error) {
	reply := make(chan snapshot, 1)
	select {
	case d.scrapes <- reply:
	case <-ctx.Done():
		return snapshot{}, errors.New("grebpf run's loop did not answer")
	}
	select {
	case s := <-reply:
		return s, nil
	case <-ctx.Done():
		return snapshot{}, errors.New("grebpf run's loop did not answer")
	}
}
