package test

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/grebpf/grebpf/internal/lab"
	"github.com/grebpf/grebpf/internal/netns"
	"github.com/grebpf/grebpf/loader"
)

// soakRounds is how many upgrades, re-attaches or attach/detach cycles
// a soak test runs: the full count, or GREBPF_SOAK_ROUNDS where CI's
// emulated VMs would take too long (the README gives the full figures).
func soakRounds(full int) int {
	if n, err := strconv.Atoi(os.Getenv("GREBPF_SOAK_ROUNDS")); err == nil && n > 0 && n < full {
		return n
	}
	return full
}

// variantBin is a second build of grebpf whose programs have other tags
// (loader.buildVariant): what a hot upgrade installs.
func variantBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("GREBPF_BIN_VARIANT"); p != "" {
		return p
	}
	p := filepath.Join(t.TempDir(), "grebpf-variant")
	out, err := exec.Command("go", "build", "-o", p,
		"-ldflags", "-X github.com/grebpf/grebpf/loader.buildVariant=1", "../cmd/grebpf").CombinedOutput()
	if err != nil {
		t.Fatalf("build the variant: %v\n%s", err, out)
	}
	return p
}

// udpFlow sends numbered datagrams lan1 → lan2 at a fixed rate until
// stopped, and counts which arrived.
type udpFlow struct {
	sent, received atomic.Uint64
	stop           chan struct{}
	done           sync.WaitGroup
}

func startUDPFlow(t *testing.T, pps int) *udpFlow {
	t.Helper()
	rx := listenUDP(t, "lan2", "172.16.200.1:7777")
	// Room for seconds of datagrams: under emulation the receiving
	// goroutine can wait that long for a CPU while attach verifies its
	// programs, and a full socket buffer is no loss of the data plane's.
	raw, err := rx.(*net.UDPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	raw.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 32<<20) })
	if err != nil {
		t.Fatal(err)
	}
	var tx net.Conn
	if err := netns.Do("lan1", func() (err error) {
		tx, err = net.Dial("udp4", "172.16.200.1:7777")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	f := &udpFlow{stop: make(chan struct{})}
	seen := map[uint64]bool{}
	f.done.Add(2)
	go func() {
		defer f.done.Done()
		buf := make([]byte, 1500)
		for {
			rx.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, _, err := rx.ReadFrom(buf)
			if err != nil {
				select {
				case <-f.stop:
					rx.Close()
					return
				default:
					continue
				}
			}
			if n >= 8 {
				if seq := binary.BigEndian.Uint64(buf); !seen[seq] {
					seen[seq] = true
					f.received.Add(1)
				}
			}
		}
	}()
	go func() {
		defer f.done.Done()
		defer tx.Close()
		tick := time.NewTicker(time.Second / time.Duration(pps))
		defer tick.Stop()
		payload := make([]byte, 200)
		for seq := uint64(0); ; seq++ {
			select {
			case <-f.stop:
				return
			case <-tick.C:
			}
			binary.BigEndian.PutUint64(payload, seq)
			if _, err := tx.Write(payload); err == nil {
				f.sent.Add(1)
			}
		}
	}()
	return f
}

// finish stops sending, waits for what is in flight, and returns what
// was sent and received.
func (f *udpFlow) finish() (sent, received uint64) {
	time.Sleep(time.Second)
	close(f.stop)
	f.done.Wait()
	return f.sent.Load(), f.received.Load()
}

// udpRcvbufErrors is how many datagrams ns's sockets had no room for.
func udpRcvbufErrors(t *testing.T, ns string) int {
	t.Helper()
	lines := strings.Split(in(t, ns, "cat", "/proc/net/snmp"), "\n")
	for i := 0; i+1 < len(lines); i++ {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != "Udp:" || len(values) != len(names) || values[0] != "Udp:" {
			continue
		}
		for j, n := range names {
			if n == "RcvbufErrors" {
				v, _ := strconv.Atoi(values[j])
				return v
			}
		}
	}
	return -1
}

var tagRE = regexp.MustCompile(`tag ([0-9a-f]{16})`)

// decapTag is the tag of the program decapsulating on r2's WAN device:
// pinned itself under clsact, or behind its pinned tcx link.
func decapTag(t *testing.T) string {
	t.Helper()
	show := execute(t, "bpftool", "prog", "show", "pinned", "/sys/fs/bpf/grebpf/r2/decap_prog").out
	if show == "" {
		m := regexp.MustCompile(`prog (\d+)`).FindStringSubmatch(execute(t, "bpftool", "link", "show", "pinned", "/sys/fs/bpf/grebpf/r2/decap_link").out)
		if m == nil {
			t.Fatal("no decap link pinned for r2")
		}
		show = execute(t, "bpftool", "prog", "show", "id", m[1]).out
	}
	m := tagRE.FindStringSubmatch(show)
	if m == nil {
		t.Fatalf("no tag in %q", show)
	}
	return m[1]
}

// Programs replaced by a new build, and tunnels re-attached with changed
// parameters, while UDP flows lan1 → lan2 at a fixed rate: not one
// datagram lost, and the counters only ever grow.
func TestHotUpgrade(t *testing.T) {
	variant := variantBin(t)
	for _, sc := range []struct {
		name string
		// attach returns the binary and arguments of the i-th re-attach
		// of router r.
		attach func(i int, r string) (string, []string)
	}{
		{"new build", func(i int, r string) (string, []string) {
			if i%2 == 0 {
				return variant, attachArgs(r)
			}
			return grebpfBin, attachArgs(r)
		}},
		{"tunnel parameters", func(i int, r string) (string, []string) {
			return grebpfBin, attachArgs(r, "--ttl", strconv.Itoa(64-i%2), "--tos", strconv.Itoa(i%2*0x20))
		}},
	} {
		t.Run(sc.name, func(t *testing.T) {
			labUp(t)
			attachBoth(t)
			mustPing(t, "lan1", "172.16.200.1")
			plain := decapTag(t)
			rounds := soakRounds(100)
			flow := startUDPFlow(t, 1000)
			time.Sleep(500 * time.Millisecond)
			var last uint64
			start := time.Now()
			for i := 0; i < rounds; i++ {
				for _, r := range []string{"r2", "r1"} {
					bin, args := sc.attach(i, r)
					if out := execute(t, bin, args...); out.code != 0 || !strings.Contains(out.out, "grebpf: attached on") {
						t.Fatalf("re-attach %d of %s: exit %d, %s%s", i, r, out.code, out.out, out.stderr)
					}
				}
				if sc.name == "new build" && i == 0 && decapTag(t) == plain {
					t.Fatal("the variant build's decap has the plain build's tag")
				}
				s := stats(t, "r1").Tunnels[0].TxPackets
				if s < last {
					t.Fatalf("round %d: r1's tx counter went back from %d to %d", i, last, s)
				}
				last = s
			}
			took := time.Since(start)
			sent, received := flow.finish()
			t.Logf("%d rounds (r2 then r1 each) in %v: %d datagrams sent, %d received, %d lost; lan2 socket buffer overflows: %d",
				rounds, took.Round(time.Millisecond), sent, received, sent-received, udpRcvbufErrors(t, "lan2"))
			if sent < 100 || received != sent {
				t.Fatalf("%d of %d datagrams lost over %d re-attaches of each router", sent-received, sent, rounds)
			}
			if rx := stats(t, "r2").Tunnels[0].RxPackets; rx < sent {
				t.Fatalf("r2 counted %d packets received, fewer than the %d sent: counters reset", rx, sent)
			}
			fmt.Fprintf(os.Stderr, "hot %s: %d re-attaches of each router, %d datagrams, 0 lost\n", sc.name, rounds, sent)
		})
	}
}

// openFDs counts this process's open file descriptors.
// settled reads a state until two reads a second apart agree (at most
// half a minute), and returns it.
func settled[T comparable](read func() T) T {
	last := read()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		time.Sleep(time.Second)
		now := read()
		if now == last {
			return now
		}
		last = now
	}
	return last
}

func openFDs(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}

// Attach/detach cycles in one process, as a daemon reloading would run
// them: everything attach touches (programs, maps, links, qdiscs,
// filters, interfaces, addresses, neighbours, routes, pins) and the
// process's open file descriptors end where they started.
func TestNoLeaks(t *testing.T) {
	labUp(t)
	grebpf(t, attachArgs("r2")...)
	cfg := lab.Default.Router(lab.Site(1))
	cycles := soakRounds(250)
	// Earlier tests' objects are freed by the kernel after their last
	// reference goes (RCU, work queues): on a slow emulated CPU that can
	// still be under way here, and must not be taken for this test's leak.
	before := settled(func() string { return snapshot(t, "r1", "wan1") })
	fds := settled(func() int { return openFDs(t) })
	start := time.Now()
	err := netns.Do("r1", func() error {
		for i := 0; i < cycles; i++ {
			if _, err := loader.AttachWith("r1", cfg); err != nil {
				return fmt.Errorf("cycle %d: attach: %w", i, err)
			}
			if _, err := loader.DetachWith("r1"); err != nil {
				return fmt.Errorf("cycle %d: detach: %w", i, err)
			}
		}
		return nil
	})
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	per := took / time.Duration(cycles)
	t.Logf("%d attach/detach cycles in %v: %v per cycle", cycles, took.Round(time.Millisecond), per.Round(time.Microsecond))
	fmt.Fprintf(os.Stderr, "attach/detach cycles: %d, %v per cycle\n", cycles, per.Round(time.Microsecond))
	if now := openFDs(t); now != fds {
		t.Errorf("open file descriptors: %d before the cycles, %d after", fds, now)
	}
	eventually(t, 20*time.Second, func() string {
		if after := snapshot(t, "r1", "wan1"); after != before {
			return fmt.Sprintf("after %d cycles:\n%s", cycles, diffLines(before, after))
		}
		return ""
	})
	grebpf(t, attachArgs("r1")...)
	mustPing(t, "lan1", "172.16.200.1")
}
