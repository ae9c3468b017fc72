// Package netns runs code inside named network namespaces (the ones
// `ip netns` keeps under /run/netns) and names the current one.
package netns

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// Dir is where iproute2 keeps named network namespaces.
const Dir = "/run/netns"

// Enter moves the calling goroutine's thread into the named namespace and
// keeps the goroutine on that thread. Everything done afterwards on this
// goroutine (netlink, BPF attach by ifindex) happens inside the namespace.
// The thread is never returned to the Go scheduler in the old namespace:
// restore switches back and unlocks.
func Enter(name string) (restore func() error, err error) {
	target, err := unix.Open(filepath.Join(Dir, name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("no network namespace %q (see `ip netns list`): %w", name, err)
	}
	defer unix.Close(target)
	runtime.LockOSThread()
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		unix.Close(orig)
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("enter network namespace %q: %w", name, err)
	}
	return func() error {
		defer unix.Close(orig)
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: the runtime will discard it rather
			// than reuse it in the wrong namespace.
			return fmt.Errorf("return from network namespace %q: %w", name, err)
		}
		runtime.UnlockOSThread()
		return nil
	}, nil
}

// Do runs fn inside the named namespace.
func Do(name string, fn func() error) error {
	restore, err := Enter(name)
	if err != nil {
		return err
	}
	ferr := fn()
	if err := restore(); err != nil {
		return err
	}
	return ferr
}

func inode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// Current names the calling thread's network namespace: its name under
// /run/netns, "host" for pid 1's, or "netns-<inode>" otherwise.
func Current() (string, error) {
	self, err := inode("/proc/thread-self/ns/net")
	if err != nil {
		return "", err
	}
	if init, err := inode("/proc/1/ns/net"); err == nil && init == self {
		return "host", nil
	}
	entries, _ := os.ReadDir(Dir)
	for _, e := range entries {
		if ino, err := inode(filepath.Join(Dir, e.Name())); err == nil && ino == self {
			return e.Name(), nil
		}
	}
	return fmt.Sprintf("netns-%d", self), nil
}

// Exists says whether a named namespace exists.
func Exists(name string) bool {
	_, err := os.Stat(filepath.Join(Dir, name))
	return err == nil
}
