package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"github.com/grebpf/grebpf/internal/config"
	"github.com/grebpf/grebpf/internal/lab"
	"github.com/grebpf/grebpf/internal/netns"
)

// runningGrebpf is a grebpf run started by a test, with what it logged and
// what it told systemd.
type runningGrebpf struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	log    bytes.Buffer
	notify chan string
	exited chan error
}

func (r *runningGrebpf) Write(b []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.log.Write(b)
}

func (r *runningGrebpf) logs() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.log.String()
}

// startRun starts grebpf run under a stand-in for systemd's notify
// socket, and waits for READY=1.
func startRun(t *testing.T, args ...string) *runningGrebpf {
	t.Helper()
	return startRunVia(t, nil, args...)
}

// startRunVia is startRun with the binary run by a command (nsenter,
// setpriv).
func startRunVia(t *testing.T, via []string, args ...string) *runningGrebpf {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	r := &runningGrebpf{notify: make(chan string, 64), exited: make(chan error, 1)}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			r.notify <- string(buf[:n])
		}
	}()
	argv := append(append(append([]string{}, via...), grebpfBin), args...)
	r.cmd = exec.Command(argv[0], argv[1:]...)
	r.cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	r.cmd.Stdout, r.cmd.Stderr = r, r
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.exited <- r.cmd.Wait() }()
	t.Cleanup(func() {
		r.cmd.Process.Kill()
		<-r.exited
	})
	r.expectNotify(t, "READY=1")
	return r
}

// expectNotify waits for a notification that starts with want.
func (r *runningGrebpf) expectNotify(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(2 * time.Minute)
	for {
		select {
		case s := <-r.notify:
			if strings.HasPrefix(s, want) {
				return
			}
		case err := <-r.exited:
			r.exited <- err
			t.Fatalf("grebpf run exited (%v) before telling systemd %s:\n%s", err, want, r.logs())
		case <-deadline:
			t.Fatalf("grebpf run did not tell systemd %s:\n%s", want, r.logs())
		}
	}
}

// logged waits for a line in run's log: the log crosses a pipe, and may
// come after what the test saw happen (a notification, a route).
func (r *runningGrebpf) logged(t *testing.T, want string) {
	t.Helper()
	eventually(t, 10*time.Second, func() string {
		if !strings.Contains(r.logs(), want) {
			return "run's log has no " + want + ":\n" + r.logs()
		}
		return ""
	})
}

// stop sends sig and wants grebpf run to exit 0.
func (r *runningGrebpf) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	r.cmd.Process.Signal(sig)
	select {
	case err := <-r.exited:
		r.exited <- err
		if err != nil {
			t.Fatalf("grebpf run on %v: %v\n%s", sig, err, r.logs())
		}
	case <-time.After(time.Minute):
		t.Fatalf("grebpf run still running a minute after %v:\n%s", sig, r.logs())
	}
}

// routerFile writes r as a config file.
func routerFile(t *testing.T, r config.Router) string {
	t.Helper()
	b, err := yaml.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return writeConfig(t, string(b))
}

// get fetches a URL from inside a namespace.
func get(t *testing.T, ns, url string) (int, string) {
	t.Helper()
	var code int
	var body []byte
	err := netns.Do(ns, func() error {
		// The connection is made here, on the thread in ns: a transport
		// dials on goroutines of its own, which may run anywhere.
		host := strings.SplitN(strings.TrimPrefix(url, "http://"), "/", 2)[0]
		conn, err := net.Dial("tcp", host)
		if err != nil {
			return err
		}
		dial := func(context.Context, string, string) (net.Conn, error) { return conn, nil }
		c := &http.Client{Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}, Timeout: 30 * time.Second}
		resp, err := c.Get(url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		code = resp.StatusCode
		body, err = io.ReadAll(resp.Body)
		return err
	})
	if err != nil {
		t.Fatalf("GET %s in %s: %v", url, ns, err)
	}
	return code, string(body)
}

// scrape reads /metrics with the Prometheus text parser, and checks it
// with promtool as Prometheus would.
func scrape(t *testing.T, ns, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	code, text := get(t, ns, "http://"+addr+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d\n%s", code, text)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, text)
	}
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Fatal("checking the metrics needs promtool: install Debian's prometheus (make deps)")
	}
	lint := exec.Command("promtool", "check", "metrics")
	lint.Stdin = strings.NewReader(text)
	if out, err := lint.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
	return fams
}

// metric is the value of the family's metric with the labels given.
func metric(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.Label {
				found = found || (l.GetName() == labels[i] && l.GetValue() == labels[i+1])
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		}
	}
	t.Fatalf("no metric %s%v", name, labels)
	return 0
}

func health(t *testing.T, ns string) string { return stats(t, ns).Tunnels[0].Health }

// grebpf run on the lab as a service: ready under systemd's protocol,
// metrics that agree with stats and pass promtool, a dead peer found and
// its routes withdrawn when the WAN is cut and put back when it heals,
// SIGHUP reloads (a broken config leaves the running one), SIGTERM leaves
// the data plane or, with --detach-on-exit, removes it.
func TestRun(t *testing.T) {
	labUp(t)
	grebpf(t, attachArgs("r2")...)
	cfg := lab.Default.Router(lab.Site(1))
	const interval, misses = 500 * time.Millisecond, 3
	cfg.Health = config.Health{Interval: interval.String(), Misses: misses, Withdraw: true}
	file := routerFile(t, cfg)
	const addr = "127.0.0.1:9477"
	d := startRun(t, "--netns", "r1", "run", "--config", file, "--metrics-addr", addr, "--prog-stats")
	t.Cleanup(func() { execute(t, grebpfBin, "--netns", "r1", "detach") })

	eventually(t, time.Minute, func() string {
		if h := health(t, "r1"); h != "up" {
			return "gre1's health is " + h + ", not up, with the peer there"
		}
		return ""
	})
	mustPing(t, "lan1", "172.16.200.1")
	var shown struct {
		Tunnels []struct{ Health string } `json:"tunnels"`
	}
	if err := json.Unmarshal([]byte(grebpf(t, "--netns", "r1", "show", "--json")), &shown); err != nil || len(shown.Tunnels) != 1 || shown.Tunnels[0].Health != "up" {
		t.Errorf("show --json: %v, tunnels %+v, want gre1 up", err, shown.Tunnels)
	}

	before := stats(t, "r1")
	fams := scrape(t, "r1", addr)
	after := stats(t, "r1")
	between := func(name string, m float64, lo, hi uint64) {
		if m < float64(lo) || m > float64(hi) {
			t.Errorf("%s = %v, not within stats' %d..%d read either side", name, m, lo, hi)
		}
	}
	tb, ta := before.Tunnels[0], after.Tunnels[0]
	between("rx_packets", metric(t, fams, "grebpf_tunnel_rx_packets_total", "tunnel", "gre1"), tb.RxPackets, ta.RxPackets)
	between("rx_bytes", metric(t, fams, "grebpf_tunnel_rx_bytes_total", "tunnel", "gre1"), tb.RxBytes, ta.RxBytes)
	between("tx_packets", metric(t, fams, "grebpf_tunnel_tx_packets_total", "tunnel", "gre1"), tb.TxPackets, ta.TxPackets)
	between("tx_bytes", metric(t, fams, "grebpf_tunnel_tx_bytes_total", "tunnel", "gre1"), tb.TxBytes, ta.TxBytes)
	for i, r := range after.Reasons {
		between(r.Reason, metric(t, fams, "grebpf_packets_total", "reason", r.Reason, "action", r.Action), before.Reasons[i].Packets, r.Packets)
	}
	// --prog-stats: the kernel counted every run of the data plane's
	// programs since the attach: at least one per packet they carried.
	if runs := metric(t, fams, "grebpf_program_runs_total", "program", "decap_tc"); runs < float64(tb.RxPackets) {
		t.Errorf("decap_tc ran %v times, fewer than the %d packets it decapsulated", runs, tb.RxPackets)
	}
	if runs := metric(t, fams, "grebpf_program_runs_total", "program", "encap_tc"); runs < float64(tb.TxPackets) {
		t.Errorf("encap_tc ran %v times, fewer than the %d packets it encapsulated", runs, tb.TxPackets)
	}
	if secs := metric(t, fams, "grebpf_program_run_seconds_total", "program", "encap_tc"); secs <= 0 {
		t.Errorf("encap_tc ran for %v s", secs)
	}
	if tb.TxPackets < 3 {
		t.Errorf("tx_packets %d after a ping and probes", tb.TxPackets)
	}
	if up := metric(t, fams, "grebpf_tunnel_up", "tunnel", "gre1"); up != 1 {
		t.Errorf("grebpf_tunnel_up %v with the peer answering", up)
	}
	if mtu := metric(t, fams, "grebpf_tunnel_path_mtu", "tunnel", "gre1"); mtu != 1500 {
		t.Errorf("grebpf_tunnel_path_mtu %v, want the WAN's 1500", mtu)
	}
	if sent, answered := metric(t, fams, "grebpf_tunnel_probes_sent_total", "tunnel", "gre1"), metric(t, fams, "grebpf_tunnel_probes_answered_total", "tunnel", "gre1"); answered < 1 || answered > sent {
		t.Errorf("probes: %v sent, %v answered", sent, answered)
	}
	if code, body := get(t, "r1", "http://"+addr+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}

	// stats --watch, piped: one table per interval, no terminal codes, and
	// the probes' traffic as rates.
	watch := grebpf(t, "--netns", "r1", "stats", "--watch", "--interval", "1s", "--count", "3")
	if n := strings.Count(watch, "grebpf stats in r1 at "); n != 3 || strings.Contains(watch, "\x1b") {
		t.Errorf("stats --watch --count 3, piped: %d tables:\n%q", n, watch)
	}
	for _, frame := range strings.Split(watch, "grebpf stats in r1 at ")[1:] {
		var rxPPS, rxBPS, txPPS, txBPS, mtu, h string
		if !scanRow(frame, "gre1", &rxPPS, &rxBPS, &txPPS, &txBPS, &mtu, &h) || h != "up" || txPPS == "0" || rxPPS == "0" {
			t.Errorf("stats --watch table without gre1 up, receiving and sending its probes:\n%s", frame)
		}
	}

	// On a terminal (script's pty) each table redraws the screen in place.
	tty := execute(t, "script", "-qec", grebpfBin+" --netns r1 stats --watch --interval 300ms --count 2", "/dev/null")
	if n := strings.Count(tty.out, "\x1b[H\x1b[2J"); tty.code != 0 || n != 2 {
		t.Errorf("stats --watch on a terminal: exit %d, %d redraws, want 2:\n%q", tty.code, n, tty.out)
	}

	if up := deadPeer(t, d, interval, misses, addr); up != 0 {
		t.Errorf("grebpf_tunnel_up %v with the WAN cut", up)
	}
	mustPing(t, "lan1", "172.16.200.1")
	for _, want := range []string{`msg="tunnel down" tunnel=gre1`, `msg="routes withdrawn" tunnel=gre1`, `msg="tunnel up" tunnel=gre1 peer=192.168.1.2 was=down`} {
		d.logged(t, want)
	}

	// SIGHUP: the file read again and attached again.
	cfg.Tunnels[0].Routes = append(cfg.Tunnels[0].Routes, "172.16.250.0/24")
	if b, err := yaml.Marshal(cfg); err != nil || os.WriteFile(file, b, 0o644) != nil {
		t.Fatal(err)
	}
	d.cmd.Process.Signal(syscall.SIGHUP)
	d.expectNotify(t, "RELOADING=1")
	d.expectNotify(t, "READY=1")
	if rt := in(t, "r1", "ip", "route", "show", "172.16.250.0/24"); !strings.Contains(rt, "dev gre1") {
		t.Errorf("after SIGHUP, the route added to the file is not there: %q\n%s", rt, d.logs())
	}
	// A broken file: the running config stays.
	if err := os.WriteFile(file, []byte("tunnels: [\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.cmd.Process.Signal(syscall.SIGHUP)
	d.expectNotify(t, "READY=1")
	d.logged(t, `msg="reload failed; the running config stays in place"`)
	if rt := in(t, "r1", "ip", "route", "show", "172.16.250.0/24"); !strings.Contains(rt, "dev gre1") {
		t.Errorf("a failed reload changed the routes: %q", rt)
	}
	mustPing(t, "lan1", "172.16.200.1")

	// A change in the kernel that a new attach fixes: run attaches again.
	in(t, "r1", "ip", "link", "del", "gre1")
	eventually(t, time.Minute, func() string {
		if !strings.Contains(d.logs(), `msg="attaching again to follow the change" what="tunnel gre1: its interface is gone`) {
			return "run did not attach again after gre1 was deleted:\n" + d.logs()
		}
		if r := ping(t, "lan1", "172.16.200.1"); r.code != 0 {
			return "no ping through the tunnel run made again:\n" + r.out
		}
		return ""
	})

	// SIGTERM: exit 0, the data plane stays and keeps carrying traffic.
	d.stop(t, syscall.SIGTERM)
	if !strings.Contains(d.logs(), `msg="stopping; the data plane stays in place" signal=terminated`) {
		t.Errorf("no stop logged:\n%s", d.logs())
	}
	grebpf(t, "--netns", "r1", "show")
	mustPing(t, "lan1", "172.16.200.1")
	if h := health(t, "r1"); h != "" {
		t.Errorf("health %q with no grebpf run probing", h)
	}

	// --detach-on-exit: SIGTERM removes it all. This run has only the
	// capabilities the systemd unit gives, in r1 as the unit would run in
	// the host's namespace.
	caps := unitCapabilities(t)
	d = startRunVia(t, []string{"nsenter", "--net=/run/netns/r1", "setpriv", "--reuid", "0",
		"--bounding-set", caps, "--inh-caps", caps, "--ambient-caps", caps},
		"run", "--config", routerFile(t, lab.Default.Router(lab.Site(1))), "--detach-on-exit", "--log-format", "json")
	d.stop(t, syscall.SIGTERM)
	if !strings.Contains(d.logs(), `"msg":"stopping; detached"`) {
		t.Errorf("no detach logged:\n%s", d.logs())
	}
	refused(t, "nothing attached in network namespace r1", "--netns", "r1", "show")
	if r := execute(t, "ip", "-n", "r1", "link", "show", "gre1"); r.code == 0 {
		t.Errorf("gre1 is still there after --detach-on-exit")
	}
}

// unitCapabilities are the capabilities dist/grebpf.service leaves the
// service, as setpriv takes them: -all,+bpf,+net_admin…
func unitCapabilities(t *testing.T) string {
	t.Helper()
	unit, err := os.ReadFile("../dist/grebpf.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(unit), "\n") {
		if caps, ok := strings.CutPrefix(l, "CapabilityBoundingSet="); ok {
			out := "-all"
			for _, c := range strings.Fields(caps) {
				out += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
			}
			return out
		}
	}
	t.Fatal("dist/grebpf.service has no CapabilityBoundingSet")
	return ""
}

// deadPeer cuts the WAN towards r2 and wants r1's grebpf run to mark gre1
// down within (misses+1) intervals and withdraw its route, then heals the
// WAN and wants both back. It returns grebpf_tunnel_up while cut, where
// run serves metrics on addr.
func deadPeer(t *testing.T, d *runningGrebpf, interval time.Duration, misses int, addr string) (up float64) {
	t.Helper()
	in(t, "wan", "ip", "link", "set", "r2", "down")
	cut := time.Now()
	limit := interval*time.Duration(misses+1) + 3*time.Second // the last answer may have come just before the cut
	eventually(t, limit, func() string {
		if h := health(t, "r1"); h != "down" {
			return fmt.Sprintf("gre1 still %s %v after the WAN was cut", h, time.Since(cut).Round(time.Millisecond))
		}
		return ""
	})
	t.Logf("gre1 down %v after the WAN was cut (interval %v, misses %d)", time.Since(cut).Round(time.Millisecond), interval, misses)
	eventually(t, 10*time.Second, func() string {
		if rt := in(t, "r1", "ip", "route", "show", "172.16.200.0/24"); rt != "" {
			return "the down tunnel's route is still there: " + rt
		}
		return ""
	})
	if addr != "" {
		up = metric(t, scrape(t, "r1", addr), "grebpf_tunnel_up", "tunnel", "gre1")
	}
	in(t, "wan", "ip", "link", "set", "r2", "up")
	eventually(t, time.Minute, func() string {
		if h := health(t, "r1"); h != "up" {
			return "gre1 still " + h + " after the WAN healed"
		}
		if rt := in(t, "r1", "ip", "route", "show", "172.16.200.0/24"); !strings.Contains(rt, "dev gre1") {
			return "the route through gre1 is not back: " + rt
		}
		return ""
	})
	mustPing(t, "lan1", "172.16.200.1")
	for _, want := range []string{`msg="tunnel down" tunnel=gre1`, `msg="routes withdrawn" tunnel=gre1`, `msg="tunnel up" tunnel=gre1 peer=192.168.1.2 was=down`} {
		d.logged(t, want)
	}
	return up
}

// Health against ip_gre, in the VM: a grebpf run whose peer is a plain
// ip_gre tunnel (which only answers the echo), and grebpf run managing
// ip_gre itself (--mode kernel), each find the dead peer and its return.
func TestParityHealth(t *testing.T) {
	needIPGRE(t)
	const interval, misses = 500 * time.Millisecond, 3
	for _, c := range []struct{ name, r1Mode, r2Mode string }{
		{"grebpf-to-ip_gre", config.ModeBPF, config.ModeKernel},
		{"ip_gre-by-run", config.ModeKernel, config.ModeBPF},
	} {
		t.Run(c.name, func(t *testing.T) {
			labUp(t)
			grebpf(t, attachArgs("r2", "--mode", c.r2Mode)...)
			cfg := lab.Default.Router(lab.Site(1))
			cfg.Mode = c.r1Mode
			cfg.Health = config.Health{Interval: interval.String(), Misses: misses, Withdraw: true}
			d := startRun(t, "--netns", "r1", "run", "--config", routerFile(t, cfg))
			t.Cleanup(func() { execute(t, grebpfBin, "--netns", "r1", "detach") })
			eventually(t, time.Minute, func() string {
				if h := health(t, "r1"); h != "up" {
					return "gre1's health is " + h + ", not up, with the peer there"
				}
				return ""
			})
			deadPeer(t, d, interval, misses, "")
			d.stop(t, syscall.SIGTERM)
		})
	}
}

// scanRow finds the table row that starts with name and reads its cells.
func scanRow(table, name string, cells ...*string) bool {
	for _, l := range strings.Split(table, "\n") {
		f := strings.Fields(l)
		if len(f) == len(cells)+1 && f[0] == name {
			for i, c := range cells {
				*c = f[i+1]
			}
			return true
		}
	}
	return false
}

// What the built binary says of itself, and what bash completes with it.
func TestVersionAndCompletion(t *testing.T) {
	head := strings.TrimSpace(execute(t, "git", "-C", "..", "rev-parse", "HEAD").out)
	if v := grebpf(t, "version"); !strings.HasPrefix(v, "grebpf v") || !strings.Contains(v, "(commit "+head) {
		t.Errorf("grebpf version: %q, want the module version and commit %s (the checkout's HEAD: build grebpf again after committing)", v, head)
	}
	if r := execute(t, grebpfBin, "--help"); r.code != 0 || !strings.Contains(r.out, "Available Commands:") {
		t.Errorf("grebpf --help: exit %d\n%s", r.code, r.out)
	}
	const bashCompletion = "/usr/share/bash-completion/bash_completion"
	if _, err := os.Stat(bashCompletion); err != nil {
		t.Fatal("completing in bash needs bash-completion: install it (make deps)")
	}
	for line, want := range map[string]string{
		"grebpf att":                   "attach",
		"grebpf lab u":                 "up",
		"grebpf attach --mode ":        "bpf kernel",
		"grebpf stats --wa":            "--watch",
		"grebpf run --log-format ":     "text json",
		"grebpf --netns r1 attach --t": "--tc --tos --ttl",
	} {
		script := fmt.Sprintf(`source %s; eval "$(grebpf completion bash)"
read -ra COMP_WORDS <<< %q; [[ %q == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMP_LINE=%q; COMP_POINT=${#COMP_LINE}
__start_grebpf 2>/dev/null; echo "${COMPREPLY[*]}"`, bashCompletion, line, line, line)
		cmd := exec.Command("bash", "-c", script)
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(grebpfBin)+":"+os.Getenv("PATH"))
		r := runCmd(t, cmd)
		if got := strings.TrimSpace(r.out); got != want {
			t.Errorf("bash completes %q with %q, want %q (%s)", line, got, want, r.stderr)
		}
	}
}

// The systemd unit in dist/ is one systemd takes (systemd-analyze verify,
// with the binary and man pages where it looks), and its sandbox keeps
// the exposure systemd measures low.
func TestSystemdUnit(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatal("checking the unit needs systemd-analyze: install systemd")
	}
	unit, err := os.ReadFile("../dist/grebpf.service")
	if err != nil {
		t.Fatal(err)
	}
	const installed = "/usr/local/bin/grebpf"
	if !strings.Contains(string(unit), "ExecStart="+installed+" run ") {
		t.Fatalf("the unit does not start %s run", installed)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "grebpf.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), installed, grebpfBin)), 0o644); err != nil {
		t.Fatal(err)
	}
	man := filepath.Join(dir, "man")
	grebpf(t, "man", "--dir", filepath.Join(man, "man8"))
	verify := exec.Command("systemd-analyze", "verify", path)
	verify.Env = append(os.Environ(), "MANPATH="+man)
	if r := runCmd(t, verify); r.code != 0 {
		t.Errorf("systemd-analyze verify: exit %d\n%s%s", r.code, r.out, r.stderr)
	}
	r := execute(t, "systemd-analyze", "security", "--offline=yes", path)
	var level float64
	i := strings.Index(r.out, "Overall exposure level for grebpf.service: ")
	if i < 0 {
		t.Fatalf("systemd-analyze security: exit %d\n%s%s", r.code, r.out, r.stderr)
	}
	fmt.Sscanf(r.out[i+len("Overall exposure level for grebpf.service: "):], "%g", &level)
	t.Logf("systemd's exposure level for the unit: %.1f", level)
	if level == 0 || level > 5 {
		t.Errorf("exposure level %.1f: the sandbox lets the service do more than a network daemon needs\n%s", level, r.out)
	}
}
