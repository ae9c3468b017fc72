package test

import (
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/grebpf/grebpf/loader"
)

// Bad input: a one-line error that names the fix, a non-zero exit, and no
// change to either router.
func TestBadInput(t *testing.T) {
	// Before the snapshot: loading ip_gre adds its fallback devices
	// (gre0, gretap0, ...) to every namespace.
	haveIPGRE := loader.HaveIPGRE()
	labUp(t)
	grebpf(t, attachArgs("r2")...)
	before := snapshot(t, "r1", "wan1") + snapshot(t, "r2", "wan2")

	// replace sets the first occurrence of flag (the IPv4 route, of the
	// two --route flags).
	replace := func(args []string, flag, val string) []string {
		out := append([]string(nil), args...)
		for i := range out {
			if out[i] == flag {
				out[i+1] = val
				break
			}
		}
		return out
	}
	r1 := attachArgs("r1")
	// One tunnel more than the maps hold, each otherwise fine.
	var many strings.Builder
	many.WriteString("device: wan1\ntunnels:\n")
	maxTunnels := loader.MaxTunnels()
	for i := 0; i <= maxTunnels; i++ {
		fmt.Fprintf(&many, "  - {name: t%d, local: 10.100.0.1, remote: 10.%d.%d.%d, overlay: 192.168.1.1, peer: 192.168.1.2}\n", i, 1+i>>16, i>>8&0xff, i&0xff)
	}
	tooMany := writeConfig(t, many.String())
	// run, with r1's tunnel in flags as attach takes them.
	run := func(extra ...string) []string {
		a := append([]string{}, r1...)
		a[2] = "run"
		return append(a, extra...)
	}
	cases := []struct {
		name   string
		args   []string
		nobody bool
		want   string
	}{
		{"not root", r1, true, "needs root (CAP_BPF and CAP_NET_ADMIN): run it with sudo"},
		{"missing device", replace(r1, "--dev", "wan9"), false, `no such interface "wan9" in network namespace r1`},
		{"missing namespace", replace(r1, "--netns", "r9"), false, `no network namespace "r9"`},
		{"bad prefix", replace(r1, "--route", "172.16.200.0/33"), false, `route "172.16.200.0/33" is not an IPv4 or IPv6 prefix`},
		{"host bits", replace(r1, "--route", "172.16.200.1/24"), false, "did you mean 172.16.200.0/24?"},
		{"overlaps a kernel route", replace(r1, "--route", "172.16.100.128/25"), false, "route 172.16.100.128/25 overlaps the kernel route 172.16.100.0/24 dev lan1"},
		{"overlapping routes", append(r1, "--route", "172.16.0.0/16"), false, "overlaps route"},
		{"local not ours", replace(r1, "--local", "10.100.0.9"), false, "local 10.100.0.9 is not an address of this namespace"},
		{"no route to remote", replace(r1, "--dev", "lan1"), false, "remote 10.200.0.1 is routed through"},
		{"bad decap", append(r1, "--decap", "ebpf"), false, `decap "ebpf": use auto, xdp or tc`},
		{"fast path on a missing device", append(r1, "--fastpath", "lan9"), false, `no such interface "lan9" in network namespace r1`},
		{"fast path with tc decap", append(r1, "--fastpath", "lan1", "--decap", "tc"), false, "the fast path decapsulates in XDP: drop decap tc"},
		{"fast path on the WAN device", append(r1, "--fastpath", "wan1"), false, "not the WAN device"},
		{"config and flags", append(r1, "--config", "/nonexistent.yaml"), false, "give either --config or tunnel flags"},
		{"missing config", []string{"--netns", "r1", "attach", "--config", "/nonexistent.yaml"}, false, "read config"},
		{"unknown tunnel", []string{"--netns", "r2", "stats", "--tunnel", "nosuch"}, false, `no tunnel named "nosuch" in r2: have gre1`},
		{"stats with nothing attached", []string{"--netns", "r1", "stats"}, false, "nothing attached in network namespace r1: run grebpf attach first"},
		{"change attach mode", attachArgs("r2", "--decap", "xdp", "--xdp-generic"), false, "run grebpf detach first to change the attach mode"},
		{"unknown command", []string{"frobnicate"}, false, `unknown command "frobnicate"`},
		{"unknown flag", append(r1, "--colour"), false, "unknown flag: --colour: run grebpf attach --help for its flags"},
		{"site without config", append(r1, "--site", "r1"), false, "--site picks a part of a config file: give --config FILE too"},
		{"bad encap", append(r1, "--encap", "ingress"), false, `encap "ingress": use peer or egress`},
		{"pmtudisc off with a fixed ttl", append(r1, "--pmtudisc", "off"), false, "pmtudisc off needs ttl inherit: a fixed TTL always does path MTU discovery, as with ip_gre"},
		{"bad pmtudisc", append(r1, "--pmtudisc", "maybe"), false, `pmtudisc "maybe": use on or off`},
		{"too many sites", []string{"lab", "up", "--sites", "9"}, false, "sites 9: use 2..8"},
		{"more tunnels than the maps hold", []string{"--netns", "r1", "attach", "--config", tooMany}, false,
			fmt.Sprintf("config has %d tunnels; grebpf holds at most %d per network namespace: split them over namespaces", maxTunnels+1, maxTunnels)},
		{"unknown topology", []string{"lab", "config", "--topology", "star"}, false, `topology "star": use mesh or hub`},
		{"run probing too often", run("--health-interval", "5ms"), false, `health: interval "5ms": use a duration of 10ms or more (1s, 500ms), or 0 for no probes`},
		{"run with a bad log level", run("--log-level", "loud"), false, `--log-level "loud": use debug, info, warn or error`},
		{"run with a bad metrics address", run("--metrics-addr", "127.0.0.1:99999"), false, "--metrics-addr 127.0.0.1:99999"},
		{"run with a broken config", []string{"--netns", "r1", "run", "--config", writeConfig(t, "tunnels: [\n")}, false, "config"},
	}
	if !haveIPGRE {
		cases = append(cases, struct {
			name   string
			args   []string
			nobody bool
			want   string
		}{"lab without ip_gre", []string{"lab", "up", "--tunnel", "kernel"}, false, "this kernel has no ip_gre"})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command(grebpfBin, c.args...)
			if c.nobody {
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
			}
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if err == nil {
				t.Fatalf("exit 0, want failure; stdout:\n%s", stdout.String())
			}
			msg := stderr.String()
			if strings.Count(msg, "\n") != 1 || !strings.HasPrefix(msg, "grebpf: ") {
				t.Errorf("want one line starting grebpf:, got %q", msg)
			}
			if !strings.Contains(msg, c.want) {
				t.Errorf("error %q, want it to say %q", msg, c.want)
			}
		})
	}
	if after := snapshot(t, "r1", "wan1") + snapshot(t, "r2", "wan2"); after != before {
		t.Errorf("bad input changed state:\n%s", diffLines(before, after))
	}
	mustPing(t, "r2", "10.100.0.1") // and the lab still works
}
