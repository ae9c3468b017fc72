package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/grebpf/grebpf/loader"
)

// configB changes r1's lab config in every way attach reconciles: a
// tunnel parameter and a route of gre1, and a new tunnel with its own
// interface, map entries, encap and route.
const configB = `device: wan1
tunnels:
  - name: gre1
    local: 10.100.0.1
    remote: 10.200.0.1
    overlay: 192.168.1.1
    peer: 192.168.1.2
    ttl: "32"
    routes: [172.16.200.0/24, 172.31.0.0/16]
  - name: gre9
    local: 10.100.0.1
    remote: 10.99.0.1
    overlay: 192.168.9.1
    peer: 192.168.9.2
    routes: [172.30.0.0/16]
`

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "grebpf.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// exactState is snapshot plus what it leaves out because the lifecycle
// tests need not look: every device's line (MTU, flags, alias, XDP
// program), the maps' contents and grebpf's records.
func exactState(t *testing.T) string {
	t.Helper()
	s := snapshot(t, "r1", "wan1") + "## links\n" + in(t, "r1", "ip", "-o", "link", "show")
	for _, m := range []string{"tunnels", "endpoints", "attachments", "tunnel_stats"} {
		p := "/sys/fs/bpf/grebpf/r1/" + m
		if _, err := os.Stat(p); err == nil {
			s += "## map " + m + "\n" + execute(t, "bpftool", "map", "dump", "pinned", p).out
		}
	}
	for _, f := range []string{"applied.json", "journal.json"} {
		b, _ := os.ReadFile(filepath.Join(loader.RunDir, "r1", f))
		s += "## " + f + "\n" + string(b) + "\n"
	}
	return s
}

var digits = regexp.MustCompile(`\d+`)

// shape is the state a config describes, without what each attach makes
// anew (ifindexes of new interfaces, MACs, BPF object ids).
func shape(t *testing.T) string {
	t.Helper()
	var links []string
	for _, l := range strings.Split(in(t, "r1", "ip", "-o", "link", "show"), "\n") {
		if f := strings.Fields(l); len(f) > 4 {
			links = append(links, f[1]+" mtu "+f[4]+" "+regexp.MustCompile(`alias \S+`).FindString(l))
		}
	}
	slices.Sort(links)
	var pins []string
	entries, _ := os.ReadDir("/sys/fs/bpf/grebpf/r1")
	for _, e := range entries {
		pins = append(pins, digits.ReplaceAllString(e.Name(), "N"))
	}
	slices.Sort(pins)
	var neigh []string
	for _, l := range strings.Split(in(t, "r1", "ip", "-4", "neigh", "show"), "\n") {
		if strings.Contains(l, "managed") {
			neigh = append(neigh, nudState.ReplaceAllString(l, ""))
		}
	}
	return strings.Join([]string{
		"links: " + strings.Join(links, ", "),
		"addresses:\n" + in(t, "r1", "sh", "-c", "ip -4 -o addr show | cut -d' ' -f2-8"),
		"routes:\n" + in(t, "r1", "ip", "-4", "route", "show", "table", "all"),
		"neighbours: " + strings.Join(neigh, ", "),
		"qdiscs:\n" + in(t, "r1", "tc", "qdisc", "show", "dev", "wan1"),
		"bpf:\n" + digits.ReplaceAllString(in(t, "r1", "bpftool", "net", "show"), "N"),
		"pins: " + strings.Join(pins, " "),
	}, "\n")
}

// txnLab is the lab a transaction test starts from: r2 attached, r1
// clean (baseline), and config B, whose shape (wantB) was taken by
// attaching it once and detaching it. tc are the attach flags of the TC
// mode under test.
type txnLab struct {
	tc              []string
	attachB         []string
	wantB, baseline string
}

// forTCModes runs a transaction test with TC programs attached the
// kernel's default way and, on the host where that is tcx, with clsact +
// cls_bpf too (in the emulated VMs each kernel runs its default: 6.1's
// is clsact).
func forTCModes(t *testing.T, test func(t *testing.T, l txnLab)) {
	run := func(t *testing.T, tc []string, configB string) {
		labUp(t)
		grebpf(t, attachArgs("r2")...)
		l := txnLab{tc: tc, attachB: []string{"--netns", "r1", "attach", "--config", writeConfig(t, configB)}}
		l.baseline = snapshot(t, "r1", "wan1")
		grebpf(t, l.attachB...)
		l.wantB = shape(t)
		grebpf(t, "--netns", "r1", "detach")
		test(t, l)
	}
	t.Run("tc auto", func(t *testing.T) { run(t, nil, configB) })
	if haveTCX() && os.Getenv("GREBPF_VM") == "" {
		t.Run("tc clsact", func(t *testing.T) { run(t, []string{"--tc", "clsact"}, configB+"tc: clsact\n") })
	}
}

// traceSteps runs grebpf to the end with the failure hook tracing, and
// returns the name of each step it took.
func traceSteps(t *testing.T, args ...string) []string {
	t.Helper()
	r := grebpfAt(t, "trace", args...)
	if r.code != 0 {
		t.Fatalf("grebpf %s: exit %d\n%s", strings.Join(args, " "), r.code, r.stderr)
	}
	var steps []string
	for _, l := range strings.Split(r.stderr, "\n") {
		if name, ok := strings.CutPrefix(l, fmt.Sprintf("grebpf: step %d: ", len(steps)+1)); ok {
			steps = append(steps, name)
		}
	}
	return steps
}

// failPoints is which of a command's steps (numbered from 1) a
// transaction test fails in turn: all of them, or, where
// GREBPF_STEP_STRIDE=s (CI's emulated VMs, whose time is short, after
// the host has failed every step in both TC attach modes), every s-th,
// every one from the commit on, and the last.
func failPoints(steps []string) []int {
	stride, _ := strconv.Atoi(os.Getenv("GREBPF_STEP_STRIDE"))
	commit := slices.Index(steps, loader.StepCommit)
	var points []int
	for i := range steps {
		if stride <= 1 || i%stride == 0 || (commit >= 0 && i >= commit) || i == len(steps)-1 {
			points = append(points, i+1)
		}
	}
	return points
}

// grebpfAt runs grebpf with the failure hook set to point.
func grebpfAt(t *testing.T, point string, args ...string) result {
	t.Helper()
	cmd := exec.Command(grebpfBin, args...)
	cmd.Env = append(os.Environ(), loader.FailpointEnv+"="+point)
	return runCmd(t, cmd)
}

// Every step of an attach fails in turn: fresh or over a running
// config, the router is left exactly as it was, and a failure after the
// commit leaves the new config in place, finished by the next attach.
func TestAttachAllOrNothing(t *testing.T) { forTCModes(t, attachAllOrNothing) }

func attachAllOrNothing(t *testing.T, l txnLab) {
	tc, attachB, wantB := l.tc, l.attachB, l.wantB

	for _, from := range []string{"fresh", "running"} {
		t.Run(from, func(t *testing.T) {
			start := func() {
				if from == "fresh" {
					grebpf(t, "--netns", "r1", "detach")
				} else {
					grebpf(t, attachArgs("r1", tc...)...)
				}
			}
			start()
			steps := traceSteps(t, attachB...)
			start()
			before := exactState(t)
			committed := false
			points := failPoints(steps)
			for _, n := range points {
				r := grebpfAt(t, fmt.Sprint(n), attachB...)
				if r.code == 0 {
					t.Fatalf("step %d (%s) did not fail", n, steps[n-1])
				}
				if !strings.Contains(r.stderr, "injected failure") || strings.Count(r.stderr, "\n") > 2 {
					t.Fatalf("step %d: exit %d, stderr %q", n, r.code, r.stderr)
				}
				if strings.Contains(r.stderr, "grebpf: attached, but") {
					committed = true
					grebpf(t, attachB...) // finishes it
					if got := shape(t); got != wantB {
						t.Fatalf("step %d (after the commit), then attach: not config B:\n%s", n, diffLines(wantB, got))
					}
					start() // back to the starting point for the next step
				} else if committed {
					t.Fatalf("step %d failed before the commit after a step that failed after it: %s", n, r.stderr)
				} else {
					// BPF objects the failed attempt loaded are freed
					// after an RCU grace period.
					eventually(t, 3*time.Second, func() string {
						if got := exactState(t); got != before {
							return fmt.Sprintf("step %d: %s left the router changed:\n%s", n, strings.TrimSpace(r.stderr), diffLines(before, got))
						}
						return ""
					})
				}
			}
			if len(steps) < 12 || !committed {
				t.Fatalf("only %d steps (committed %v): the hook misses steps", len(steps), committed)
			}
			t.Logf("%d steps; failed each of %v once", len(steps), points)
			grebpf(t, attachB...)
			if got := shape(t); got != wantB {
				t.Fatalf("attach without a failure: not config B:\n%s", diffLines(wantB, got))
			}
			mustPing(t, "lan1", "172.16.200.1")
			grebpf(t, "--netns", "r1", "detach")
		})
	}
}

// kill -9 at each step of an attach or a detach: the next command
// finishes or undoes the work, and detach then leaves nothing behind.
func TestKilledMidway(t *testing.T) { forTCModes(t, killedMidway) }

func killedMidway(t *testing.T, l txnLab) {
	tc, attachB, wantB, baseline := l.tc, l.attachB, l.wantB, l.baseline
	detach := []string{"--netns", "r1", "detach"}

	clean := func(t *testing.T, n int) {
		t.Helper()
		grebpf(t, detach...)
		eventually(t, 3*time.Second, func() string {
			if got := snapshot(t, "r1", "wan1"); got != baseline {
				return fmt.Sprintf("kill at step %d, then detach: left behind:\n%s", n, diffLines(baseline, got))
			}
			return ""
		})
		for _, f := range []string{"applied.json", "journal.json"} {
			if _, err := os.Stat(filepath.Join(loader.RunDir, "r1", f)); err == nil {
				t.Fatalf("kill at step %d, then detach: %s left behind", n, f)
			}
		}
	}
	// What each scenario sets up, what is killed, and what runs next.
	for _, sc := range []struct {
		name   string
		setup  []string
		killed []string
		next   []string
	}{
		{"fresh attach", nil, attachB, detach},
		{"re-attach", attachArgs("r1", tc...), attachB, attachB},
		{"detach", attachB, detach, detach},
	} {
		t.Run(sc.name, func(t *testing.T) {
			if sc.setup != nil {
				grebpf(t, sc.setup...)
			}
			steps := traceSteps(t, sc.killed...)
			clean(t, 0)
			if len(steps) < 4 {
				t.Fatalf("only %d kill points", len(steps))
			}
			points := failPoints(steps)
			for _, n := range points {
				if sc.setup != nil {
					grebpf(t, sc.setup...)
				}
				r := grebpfAt(t, fmt.Sprintf("kill:%d", n), sc.killed...)
				if r.code != -int(syscall.SIGKILL) {
					t.Fatalf("kill at step %d (%s): exit %d, stderr %q", n, steps[n-1], r.code, r.stderr)
				}
				out := grebpf(t, sc.next...)
				if slices.Equal(sc.next, attachB) {
					if got := shape(t); got != wantB {
						t.Fatalf("kill at step %d, then attach: not config B:\n%s", n, diffLines(wantB, got))
					}
					mustPing(t, "lan1", "172.16.200.1")
				} else if strings.Contains(out, "nothing attached") && n > 1 {
					t.Fatalf("kill at step %d, then detach said %q", n, out)
				}
				clean(t, n)
			}
			t.Logf("%d steps; killed at each of %v", len(steps), points)
		})
	}
}

// Concurrent attaches on a fresh router: one attaches, the other waits
// and finds it done; nothing fails. A holder that does not let go gets
// a one-line refusal; show never waits.
func TestAttachLock(t *testing.T) {
	labUp(t)
	grebpf(t, attachArgs("r2")...)
	for round := 0; round < 5; round++ {
		var wg sync.WaitGroup
		res := make([]result, 2)
		for i := range res {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res[i] = execute(t, grebpfBin, attachArgs("r1")...)
			}()
		}
		wg.Wait()
		said := res[0].out + res[1].out
		for _, r := range res {
			if r.code != 0 {
				t.Fatalf("round %d: concurrent attach failed: %s", round, r.stderr)
			}
		}
		if strings.Count(said, "grebpf: attached on") != 1 || strings.Count(said, "nothing changed") != 1 {
			t.Fatalf("round %d: want one attach and one no-op, got:\n%s", round, said)
		}
		mustPing(t, "lan1", "172.16.200.1")
		grebpf(t, "--netns", "r1", "detach")
	}

	// Another process holds r1's lock for a while.
	grebpf(t, attachArgs("r1")...)
	holder := exec.Command("flock", filepath.Join(loader.RunDir, "r1", "lock"), "sleep", "5")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer holder.Wait()
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	if out := grebpf(t, "--netns", "r1", "show"); !strings.Contains(out, "gre1") {
		t.Errorf("show under the lock: %q", out)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("show waited %v for the lock", d)
	}
	refused(t, "still holds network namespace r1 after 300ms: wait for it to finish", append(attachArgs("r1"), "--wait", "300ms")...)
	refused(t, "still holds network namespace r1", "--netns", "r1", "detach", "--wait", "300ms")
}
