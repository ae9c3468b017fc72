package loader

import (
	"encoding/json"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

type healthFile struct {
	PID     int               `json:"pid"`
	Tunnels map[string]string `json:"tunnels"` // name → up | down
}

// healthPath is where grebpf run shares the tunnels' health, which only
// it knows, with the other commands.
func healthPath(ns string) string { return filepath.Join(RunDir, ns, "health") }

// WriteHealth records the tunnels' health in ns for show, stats and
// metrics, replacing the file whole so a reader never sees half of it.
func WriteHealth(ns string, tunnels map[string]string) error {
	if err := os.MkdirAll(filepath.Dir(healthPath(ns)), 0o755); err != nil {
		return err
	}
	b, err := json.Marshal(healthFile{os.Getpid(), tunnels})
	if err != nil {
		return err
	}
	tmp := healthPath(ns) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, healthPath(ns))
}

// RemoveHealth forgets ns's health, when run stops probing.
func RemoveHealth(ns string) { os.Remove(healthPath(ns)) }

// Health is the tunnels' health in ns as grebpf run last saw it, or nil
// when no run probes there (a run that died leaves a file whose process
// is gone: that health is stale, not news).
func Health(ns string) map[string]string {
	b, err := os.ReadFile(healthPath(ns))
	if err != nil {
		return nil
	}
	var h healthFile
	if json.Unmarshal(b, &h) != nil || h.PID <= 0 || unix.Kill(h.PID, 0) == unix.ESRCH {
		return nil
	}
	return h.Tunnels
}
