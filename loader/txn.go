package loader

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/grebpf/grebpf/internal/config"
)

// record is what a committed attach applied: the router, and the outer
// next hops it keeps resolved (managed neighbours are not marked as
// grebpf's in the kernel, so detach needs their list).
type record struct {
	Router   config.Router
	Nexthops []netip.Addr
}

// journal says that an attach or detach is in flight. A process that
// finds one left behind (its writer was killed) recovers before doing
// anything else: an attach is rolled back to the committed record (or,
// once committed, finished), a detach is finished.
type journal struct {
	Op   string // attach | detach
	PID  int
	Next record // what the attach was applying
}

const (
	opAttach = "attach"
	opDetach = "detach"
)

func recordPath(ns string) string  { return filepath.Join(runDir(ns), "applied.json") }
func journalPath(ns string) string { return filepath.Join(runDir(ns), "journal.json") }

// writeJSON replaces path atomically: a reader sees the old file or the
// new one, never half of one.
func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func readJSON(path string, v any) (bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("%s is damaged (%v): remove it, then run grebpf detach", path, err)
	}
	return true, nil
}

func readRecord(ns string) (record, bool, error) {
	var r record
	ok, err := readJSON(recordPath(ns), &r)
	return r, ok, err
}

func readJournal(ns string) (journal, bool, error) {
	var j journal
	ok, err := readJSON(journalPath(ns), &j)
	return j, ok, err
}

func removeFile(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// txn is one attach or detach: it numbers the steps that change the
// kernel, for the failure-injection hook, and keeps what it needs to put
// upgraded programs back if the attach is undone.
type txn struct {
	step int
	// restoring applies a committed record again: programs attached
	// stay as they are (an undo has put the old ones back already).
	restoring bool
	reverts   []func() error // newest last
	keep      []io.Closer    // old programs, held until the end for reverts
}

// FailpointEnv is the test hook that proves the transaction: "N" makes
// step N fail as if the kernel had refused it, "kill:N" kills the process
// there as kill -9 would, "trace" names each step on stderr and fails
// none (how a test learns which steps there are).
const FailpointEnv = "GREBPF_FAILPOINT"

// StepCommit names the step that commits an attach: a failure before it
// leaves the router as it was, one after it is finished by the next attach.
const StepCommit = "commit"

// errInjected is the failure the hook injects.
var errInjected = errors.New("injected failure")

// at is called before each step that changes the kernel.
func (x *txn) at(name string) error {
	x.step++
	fp := os.Getenv(FailpointEnv)
	if fp == "" {
		return nil
	}
	if fp == "trace" {
		fmt.Fprintf(os.Stderr, "grebpf: step %d: %s\n", x.step, name)
		return nil
	}
	kill := strings.HasPrefix(fp, "kill:")
	n, err := strconv.Atoi(strings.TrimPrefix(fp, "kill:"))
	if err != nil || n != x.step {
		return nil
	}
	if kill {
		unix.Kill(os.Getpid(), unix.SIGKILL)
		select {} // the signal is on its way
	}
	return fmt.Errorf("step %d (%s): %w", x.step, name, errInjected)
}

// onUndo registers how to put back a program attach replaced.
func (x *txn) onUndo(revert func() error, old io.Closer) {
	x.reverts = append(x.reverts, revert)
	if old != nil {
		x.keep = append(x.keep, old)
	}
}

// revertPrograms puts back, newest first, the programs this transaction
// replaced.
func (x *txn) revertPrograms() error {
	var errs []error
	for i := len(x.reverts) - 1; i >= 0; i-- {
		errs = append(errs, x.reverts[i]())
	}
	x.reverts = nil
	return errors.Join(errs...)
}

func (x *txn) close() {
	for _, c := range x.keep {
		c.Close()
	}
}
