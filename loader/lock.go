package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// RunDir holds, per network namespace, the lock that serialises attach
// and detach, the record of the last committed attach and the journal of
// one in flight. It is tmpfs, like bpffs: both go away at reboot.
const RunDir = "/run/grebpf"

// LockWait is how long attach and detach wait for another grebpf holding
// the namespace before giving up.
var LockWait = 60 * time.Second

// nsLock is an exclusive flock on RunDir/<ns>/lock. The kernel drops it
// when its holder exits, however it exits, so a killed attach never
// leaves it held. The file stays: removing it while another process
// waits on it would let a third lock a new file and run beside the waiter.
type nsLock struct{ f *os.File }

func runDir(ns string) string { return filepath.Join(RunDir, ns) }

// lockNS takes ns's lock for what ("attach", "detach"), waiting up to
// LockWait. Reads (show, stats) never take it.
func lockNS(ns, what string) (*nsLock, error) {
	if err := os.MkdirAll(runDir(ns), 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", runDir(ns), err)
	}
	path := filepath.Join(runDir(ns), "lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	deadline := time.Now().Add(LockWait)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			holder, _ := os.ReadFile(path)
			f.Close()
			h := strings.TrimSpace(string(holder))
			if h == "" {
				h = "another grebpf"
			}
			return nil, fmt.Errorf("%s still holds network namespace %s after %s: wait for it to finish, or stop it and run the command again", h, ns, LockWait)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Who holds it, for the message of whoever gives up waiting.
	f.Truncate(0)
	f.WriteAt(fmt.Appendf(nil, "grebpf %s (pid %d, since %s)\n", what, os.Getpid(), time.Now().Format(time.TimeOnly)), 0)
	return &nsLock{f}, nil
}

func (l *nsLock) unlock() {
	l.f.Truncate(0)
	unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
	l.f.Close()
}
