package main

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ from what the commands print now")

func TestRunErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "no command given: run grebpf --help for the commands"},
		{[]string{"frob"}, `unknown command "frob" for "grebpf"`},
		{[]string{"atach"}, "Did you mean this?"},
		{[]string{"--bogus", "show"}, "unknown flag: --bogus: run grebpf --help for its flags"},
		{[]string{"show", "--bogus"}, "unknown flag: --bogus: run grebpf show --help for its flags"},
		{[]string{"--netns", "no-such-ns-here", "show"}, `no network namespace "no-such-ns-here"`},
		{[]string{"lab"}, "lab: say up, down or config"},
		{[]string{"lab", "sideways"}, `unknown command "sideways" for "grebpf lab"`},
		{[]string{"lab", "up", "--tunnel", "vxlan"}, `tunnel "vxlan": use none, bpf or kernel`},
		{[]string{"bench", "--rounds", "0"}, "rounds 0: use 1 or more"},
		{[]string{"bench", "--flows", "0"}, "flows 0: use 1..65535"},
		{[]string{"--netns", "r1", "bench"}, "bench builds its own lab: drop --netns"},
		{[]string{"man"}, `required flag(s) "dir" not set`},
		{[]string{"--netns", "r1", "version"}, "grebpf version does not act in a namespace: drop --netns"},
		{[]string{"run", "--log-format", "xml"}, `--log-format "xml": use text or json`},
		{[]string{"stats", "--watch", "--interval", "1ms"}, "--interval 1ms: use 10ms or more"},
	} {
		var out strings.Builder
		err := run(c.args, &out)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("grebpf %v: error %v, want %q", c.args, err, c.want)
		}
	}
}

// helpCommands are every command whose help is kept in testdata/help.
var helpCommands = [][]string{
	{}, {"attach"}, {"detach"}, {"run"}, {"stats"}, {"show"}, {"lab"}, {"lab", "up"}, {"lab", "down"},
	{"lab", "config"}, {"bench"}, {"version"}, {"man"}, {"completion"}, {"completion", "bash"},
}

// Help is multi-line, goes to stdout and is not an error, however it is
// asked for (--help, -h, help CMD); it is golden, so a change to a flag or
// its text shows in review.
func TestHelp(t *testing.T) {
	for _, cmd := range helpCommands {
		name := strings.Join(append([]string{"grebpf"}, cmd...), "-")
		var out strings.Builder
		if err := run(append(append([]string{}, cmd...), "--help"), &out); err != nil {
			t.Errorf("%s --help: %v", name, err)
			continue
		}
		help := out.String()
		if strings.Count(help, "\n") < 5 || !strings.Contains(help, "Usage:\n  grebpf") {
			t.Errorf("%s --help printed %q", name, help)
		}
		for _, other := range [][]string{append(append([]string{}, cmd...), "-h"), append([]string{"help"}, cmd...)} {
			var o strings.Builder
			if err := run(other, &o); err != nil || o.String() != help {
				t.Errorf("grebpf %s: %v, printed other than --help:\n%s", strings.Join(other, " "), err, o.String())
			}
		}
		golden(t, filepath.Join("testdata", "help", name+".golden"), help)
	}
}

// golden compares got with a file, or writes it with -update.
func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test ./cmd/grebpf -run %s -update writes it)", err, t.Name())
	}
	if string(want) != got {
		t.Errorf("%s differs from what the command prints (review, then go test ./cmd/grebpf -run %s -update):\n%s", path, t.Name(), got)
	}
}

// What a shell's completion offers, asked as the scripts ask it.
func TestCompletion(t *testing.T) {
	for _, c := range []struct{ name, args string }{
		{"commands", "__complete "},
		{"lab", "__complete lab "},
		{"attach-flags", "__complete attach --de"},
		{"mode", "__complete attach --mode "},
		{"decap", "__complete run --decap "},
		{"bench-mode", "__complete bench --mode "},
		{"log-format", "__complete run --log-format "},
	} {
		args := strings.Split(c.args, " ")
		var out strings.Builder
		if err := run(args, &out); err != nil {
			t.Errorf("%s: %v", c.args, err)
			continue
		}
		golden(t, filepath.Join("testdata", "complete", c.name+".golden"), out.String())
	}
	for shell, head := range map[string]string{"bash": "# bash completion V2 for grebpf", "zsh": "#compdef grebpf", "fish": "# fish completion for grebpf"} {
		var out strings.Builder
		if err := run([]string{"completion", shell}, &out); err != nil || !strings.HasPrefix(out.String(), head) {
			t.Errorf("completion %s: %v, starts %.60q", shell, err, out.String())
		}
		if shell == "bash" {
			check := exec.Command("bash", "-n")
			check.Stdin = strings.NewReader(out.String())
			if b, err := check.CombinedOutput(); err != nil {
				t.Errorf("bash -n on the bash completion: %v: %s", err, b)
			}
		}
	}
}

func TestVersionLine(t *testing.T) {
	platform := runtime.GOOS + "/" + runtime.GOARCH
	for _, c := range []struct {
		info *debug.BuildInfo
		want string
	}{
		{&debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261129020000-26c7dd4abcde"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "26c7dd4abcdef"}, {Key: "vcs.modified", Value: "false"}}},
			"grebpf v0.0.0-20261129020000-26c7dd4abcde (commit 26c7dd4abcdef, go1.26.8 " + platform + ")"},
		{&debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.3+dirty"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.modified", Value: "true"}}},
			"grebpf v1.2.3+dirty (commit abc, modified, go1.26.8 " + platform + ")"},
		{&debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}},
			"grebpf (devel) (commit unknown, go1.26.8 " + platform + ")"},
	} {
		if got := versionLine(c.info); got != c.want {
			t.Errorf("got %q, want %q", got, c.want)
		}
	}
}

// The man pages come from the same definitions as --help: one per
// command, each naming its flags.
func TestManPages(t *testing.T) {
	dir := t.TempDir()
	var out strings.Builder
	if err := run([]string{"man", "--dir", dir}, &out); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range helpCommands {
		name := strings.Join(append([]string{"grebpf"}, cmd...), "-") + ".8"
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("no man page %s: %v", name, err)
			continue
		}
		if !strings.Contains(string(b), `.TH "GREBPF" "8"`) || !strings.Contains(string(b), `.SH NAME`) {
			t.Errorf("%s is not a section 8 man page: %.80q", name, b)
		}
	}
	b, _ := os.ReadFile(filepath.Join(dir, "grebpf-attach.8"))
	for _, flag := range []string{`\fB--config\fP`, `\fB--encaplimit\fP`, `\fB--netns\fP`} {
		if !strings.Contains(string(b), flag) {
			t.Errorf("grebpf-attach.8 does not name %s", flag)
		}
	}
}
