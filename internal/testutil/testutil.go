// Package testutil holds helpers shared by tests: a private network
// namespace per test, and the root check that says why a test cannot run.
package testutil

import (
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// NeedRoot fails (not skips) a test when not root: the suite is meant to
// run as root, and a skipped data-plane test must never look like a pass.
func NeedRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Fatal("needs root (BPF, netlink, namespaces): run the suite as root, e.g. sudo make test")
	}
}

// NetNS moves the calling test goroutine, locked to its thread, into a new
// empty network namespace for the rest of the test. The thread is dropped
// at the end rather than returned to the scheduler in the wrong namespace.
func NetNS(tb testing.TB) {
	tb.Helper()
	NeedRoot(tb)
	runtime.LockOSThread()
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		unix.Close(orig)
		tb.Fatalf("unshare network namespace: %v", err)
	}
	tb.Cleanup(func() {
		defer unix.Close(orig)
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			tb.Errorf("return to original namespace: %v", err)
			return // leave the thread locked: the runtime kills it
		}
		runtime.UnlockOSThread()
	})
}
