package bpf_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The committed bpf2go output must be what the C sources compile to: the
// //go:generate line of gen.go is run again into a temporary directory.
func TestGeneratedUpToDate(t *testing.T) {
	src, err := os.ReadFile("gen.go")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("clang-19"); err != nil {
		t.Fatal("clang-19 is needed to check the generated objects: apt-get install clang-19 llvm-19 libbpf-dev (make deps)")
	}
	n := 0
	for _, l := range strings.Split(string(src), "\n") {
		rest, ok := strings.CutPrefix(l, "//go:generate go tool bpf2go ")
		if !ok {
			continue
		}
		n++
		args := strings.Fields(rest)
		// The identifier comes after the flags, before the C file; bpf2go
		// names its output after it in lower case.
		ident := ""
		for i, a := range args {
			if strings.HasSuffix(a, ".c") {
				ident = args[i-1]
			}
		}
		dir := t.TempDir()
		cmd := exec.Command("go", append([]string{"tool", "bpf2go", "-output-dir", dir}, args...)...)
		cmd.Env = append(os.Environ(), "GOPACKAGE=bpf")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("bpf2go %s: %v\n%s", ident, err, out)
		}
		for _, ext := range []string{"_bpfel.go", "_bpfel.o"} {
			f := strings.ToLower(ident) + ext
			want, err := os.ReadFile(filepath.Join(dir, f))
			if err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s is stale: run go generate ./bpf (make generate) and commit it", f)
			}
		}
	}
	if n != 2 {
		t.Errorf("found %d bpf2go lines in gen.go, want 2", n)
	}
}
