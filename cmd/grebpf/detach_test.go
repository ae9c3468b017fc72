package main

import (
	"strings"
	"testing"

	"github.com/grebpf/grebpf/internal/testutil"
)

// In a namespace with nothing attached, detach succeeds and says so, while
// stats and show refuse and say what to run.
func TestNothingAttached(t *testing.T) {
	testutil.NetNS(t)
	var out strings.Builder
	if err := run([]string{"detach"}, &out); err != nil || !strings.Contains(out.String(), "nothing attached in netns-") {
		t.Errorf("detach: %v %q", err, out.String())
	}
	for _, cmd := range []string{"stats", "show"} {
		if err := run([]string{cmd}, &out); err == nil || !strings.Contains(err.Error(), "run grebpf attach first") {
			t.Errorf("%s: %v", cmd, err)
		}
	}
}
