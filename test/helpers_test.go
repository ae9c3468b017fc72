// Package test holds the integration tests: the lab of DESIGN §2 in real
// namespaces, the grebpf binary, and real ping, traceroute, iperf3 and
// tcpdump. The tests share the lab's fixed names, so they run one by one.
package test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/grebpf/grebpf/internal/lab"
	"github.com/grebpf/grebpf/loader"
)

var grebpfBin string

// What the kernel can do decides what attach chooses and refuses; the
// tests expect accordingly, from the same probes (not the version).
var (
	haveTCX = sync.OnceValue(loader.HaveTCX)
)

// refused runs grebpf, which must fail with a one-line error containing want.
func refused(t *testing.T, want string, args ...string) {
	t.Helper()
	r := execute(t, grebpfBin, args...)
	if r.code == 0 || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, want) {
		t.Fatalf("grebpf %s: exit %d, stderr %q; want a one-line error saying %q", strings.Join(args, " "), r.code, r.stderr, want)
	}
}

func TestMain(m *testing.M) {
	os.Exit(func() int {
		if os.Geteuid() != 0 {
			fmt.Fprintln(os.Stderr, "integration tests need root (namespaces, BPF): run them as root, e.g. sudo make test")
			return 1
		}
		for _, tool := range []string{"ip", "tc", "traceroute", "ping", "iperf3", "tcpdump", "bpftool", "ethtool"} {
			if _, err := exec.LookPath(tool); err != nil {
				fmt.Fprintf(os.Stderr, "integration tests need %s: install it (make deps)\n", tool)
				return 1
			}
		}
		// The VM runner passes a binary built on the host: building under
		// emulation would take minutes.
		if grebpfBin = os.Getenv("GREBPF_BIN"); grebpfBin != "" {
			return m.Run()
		}
		dir, err := os.MkdirTemp("", "grebpf-test")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		// Others may run it: the not-root test runs it as nobody.
		if err := os.Chmod(dir, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		grebpfBin = filepath.Join(dir, "grebpf")
		if out, err := exec.Command("go", "build", "-buildvcs=auto", "-o", grebpfBin, "../cmd/grebpf").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build grebpf: %v\n%s", err, out)
			return 1
		}
		return m.Run()
	}())
}

// result is a finished command.
type result struct {
	out, stderr string
	code        int
}

func execute(t testing.TB, name string, args ...string) result {
	t.Helper()
	return runCmd(t, exec.Command(name, args...))
}

// cmdLimit is the longest any one command of a test may take, emulated
// VMs included: a command that hangs fails its test, named, instead of
// eating the time of the whole run.
const cmdLimit = 5 * time.Minute

// runCmd runs cmd; a command killed by a signal has minus the signal's
// number as its code.
func runCmd(t testing.TB, cmd *exec.Cmd) result {
	t.Helper()
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 10 * time.Second // for children left holding the output
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", strings.Join(cmd.Args, " "), err)
	}
	hung := time.AfterFunc(cmdLimit, func() { cmd.Process.Kill() })
	err := cmd.Wait()
	if !hung.Stop() {
		t.Fatalf("%s: still running after %v, killed\n%s%s", strings.Join(cmd.Args, " "), cmdLimit, stdout.String(), stderr.String())
	}
	r := result{out: stdout.String(), stderr: stderr.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			r.code = -int(ws.Signal())
		}
	} else if err != nil {
		t.Fatalf("%s: %v", strings.Join(cmd.Args, " "), err)
	}
	return r
}

// in runs a command in a lab namespace and fails the test if it fails.
func in(t testing.TB, ns string, args ...string) string {
	t.Helper()
	r := execute(t, "ip", append([]string{"netns", "exec", ns}, args...)...)
	if r.code != 0 {
		t.Fatalf("[%s] %s: exit %d\n%s%s", ns, strings.Join(args, " "), r.code, r.out, r.stderr)
	}
	return r.out
}

// grebpf runs the binary and fails the test if it fails.
func grebpf(t testing.TB, args ...string) string {
	t.Helper()
	r := execute(t, grebpfBin, args...)
	if r.code != 0 {
		t.Fatalf("grebpf %s: exit %d\n%s%s", strings.Join(args, " "), r.code, r.out, r.stderr)
	}
	return r.out
}

// labUp builds the lab with no tunnel and tears it down after the test.
// Extra arguments go to lab up (--fastpath).
func labUp(t *testing.T, extra ...string) {
	t.Helper()
	execute(t, grebpfBin, "lab", "down") // a previous run's leftovers
	grebpf(t, append([]string{"lab", "up", "--tunnel", "none"}, extra...)...)
	t.Cleanup(func() { grebpf(t, "lab", "down") })
}

// ipv6WAN is the seed's lab with its WAN in IPv6.
var ipv6WAN = lab.Lab{Sites: 2, Topology: lab.TopologyMesh, WAN: lab.WANIPv6}

// labArgs are the lab up arguments that build l's WAN.
func labArgs(l lab.Lab) []string {
	if l.WAN == lab.WANIPv6 {
		return []string{"--wan", "ipv6"}
	}
	return nil
}

// attachArgs are the lab's tunnel, as a user would type it, per router
// (r1 or r2). In extra, LAN stands for the router's LAN device.
func attachArgs(router string, extra ...string) []string {
	return attachArgsIn(lab.Default, router, extra...)
}

// attachArgsIn is attachArgs for the lab l.
func attachArgsIn(l lab.Lab, router string, extra ...string) []string {
	s := lab.Site(map[string]int{"r1": 1, "r2": 2}[router])
	cfg := l.Router(s)
	tn := cfg.Tunnels[0]
	a := []string{"--netns", router, "attach", "--dev", cfg.Device, "--local", tn.Local, "--remote", tn.Remote,
		"--overlay", tn.Overlay, "--peer", tn.Peer, "--overlay6", tn.Overlay6, "--peer6", tn.Peer6}
	for _, r := range tn.Routes {
		a = append(a, "--route", r)
	}
	for _, e := range extra {
		if e == "LAN" {
			e = s.Host()
		}
		a = append(a, e)
	}
	// Full: a caller's append copies instead of writing into another's.
	return slices.Clip(a)
}

// withoutFlag is args without each occurrence of flag and its value.
func withoutFlag(args []string, flag string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		if args[i] == flag {
			i++
			continue
		}
		out = append(out, args[i])
	}
	return out
}

// attachBoth attaches r2 then r1 (decap live before the peer encapsulates).
func attachBoth(t *testing.T, extra ...string) {
	t.Helper()
	attachBothIn(t, lab.Default, extra...)
}

// attachBothIn is attachBoth for the lab l.
func attachBothIn(t *testing.T, l lab.Lab, extra ...string) {
	t.Helper()
	grebpf(t, attachArgsIn(l, "r2", extra...)...)
	grebpf(t, attachArgsIn(l, "r1", extra...)...)
}

var hopRE = regexp.MustCompile(`^\s*(\d+)\s+(.*)$`)

// traceroute returns one string per hop: the answering address, or "*".
// seedTraceroutes are the lab's traceroutes across the tunnel, both ways,
// over IPv4 and IPv6: the sender's router, the far end of the tunnel, the
// host.
var seedTraceroutes = []struct {
	from, to string
	want     []string
}{
	{"lan1", "172.16.200.1", []string{"172.16.100.254", "192.168.1.2", "172.16.200.1"}},
	{"lan2", "172.16.100.1", []string{"172.16.200.254", "192.168.1.1", "172.16.100.1"}},
	{"lan1", "2001:db8:200::1", []string{"2001:db8:100::254", "fd00:1::2", "2001:db8:200::1"}},
	{"lan2", "2001:db8:100::1", []string{"2001:db8:200::254", "fd00:1::1", "2001:db8:100::1"}},
}

// checkSeedTraceroutes runs seedTraceroutes; what tells the mode apart in
// a failure.
func checkSeedTraceroutes(t *testing.T, what string) {
	t.Helper()
	for _, c := range seedTraceroutes {
		if got := traceroute(t, c.from, c.to, 5); !slices.Equal(got, c.want) {
			t.Errorf("%s: traceroute %s → %s: %v, want %v", what, c.from, c.to, got, c.want)
		}
	}
}

func traceroute(t *testing.T, from, to string, maxHops int) []string {
	t.Helper()
	out := in(t, from, "traceroute", "-n", "-q", "1", "-w", "1", "-m", fmt.Sprint(maxHops), to)
	var hops []string
	for _, line := range strings.Split(out, "\n") {
		m := hopRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		hops = append(hops, strings.Fields(m[2])[0])
	}
	return hops
}

func ping(t *testing.T, from, to string, extra ...string) result {
	t.Helper()
	return execute(t, "ip", append([]string{"netns", "exec", from, "ping", "-c", "1", "-W", "2"}, append(extra, to)...)...)
}

func mustPing(t *testing.T, from, to string) {
	t.Helper()
	if r := ping(t, from, to); r.code != 0 {
		t.Fatalf("ping %s → %s failed:\n%s%s", from, to, r.out, r.stderr)
	}
}

// statsJSON is grebpf stats --json.
type statsJSON struct {
	Tunnels []struct {
		Name      string `json:"name"`
		RxPackets uint64 `json:"rx_packets"`
		RxBytes   uint64 `json:"rx_bytes"`
		TxPackets uint64 `json:"tx_packets"`
		TxBytes   uint64 `json:"tx_bytes"`
		Health    string `json:"health"`
	} `json:"tunnels"`
	Reasons []struct {
		Reason  string `json:"reason"`
		Action  string `json:"action"`
		Packets uint64 `json:"packets"`
	} `json:"reasons"`
}

func stats(t *testing.T, ns string) statsJSON {
	t.Helper()
	var s statsJSON
	if err := json.Unmarshal([]byte(grebpf(t, "--netns", ns, "stats", "--json")), &s); err != nil {
		t.Fatal(err)
	}
	if len(s.Tunnels) != 1 {
		t.Fatalf("stats in %s: %d tunnels", ns, len(s.Tunnels))
	}
	return s
}

func (s statsJSON) reason(name string) uint64 {
	for _, r := range s.Reasons {
		if r.Reason == name {
			return r.Packets
		}
	}
	return 0
}

// eventually retries check until it returns "" or the time runs out; for
// kernel state released asynchronously (BPF objects are freed after RCU).
func eventually(t *testing.T, d time.Duration, check func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		msg := check()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
