package main

import (
	"strings"
	"testing"
)

func TestRunErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "no command given"},
		{[]string{"frob"}, `unknown command "frob"`},
		{[]string{"--bogus", "show"}, "flag provided but not defined"},
		{[]string{"--netns", "no-such-ns-here", "show"}, `no network namespace "no-such-ns-here"`},
		{[]string{"lab"}, "lab: say up, down or config"},
		{[]string{"lab", "sideways"}, `unknown action "sideways"`},
		{[]string{"lab", "up", "--tunnel", "vxlan"}, `tunnel "vxlan": use none, bpf or kernel`},
		{[]string{"bench", "--rounds", "0"}, "rounds 0: use 1 or more"},
		{[]string{"bench", "--flows", "0"}, "flows 0: use 1..65535"},
		{[]string{"--netns", "r1", "bench"}, "bench builds its own lab: drop --netns"},
	} {
		var out strings.Builder
		err := run(c.args, &out)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("grebpf %v: error %v, want %q", c.args, err, c.want)
		}
	}
}

func TestHelpIsNotAnError(t *testing.T) {
	for _, cmd := range []string{"attach", "detach", "stats", "show", "bench"} {
		var out strings.Builder
		if err := run([]string{cmd, "--help"}, &out); err != nil {
			t.Errorf("%s --help: %v", cmd, err)
		}
		if !strings.Contains(out.String(), "usage: grebpf [--netns NAME] "+cmd) {
			t.Errorf("%s --help printed %q", cmd, out.String())
		}
	}
}
