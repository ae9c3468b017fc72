package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

const bpffsPath = "/sys/fs/bpf"

func isBPFFS(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.BPF_FS_MAGIC
}

// initProc is a process in the initial mount namespace: pid 1, or kthreadd
// where pid 1 hides its namespaces (some sandboxes' init does).
func initProc() string {
	for _, p := range []string{"/proc/1", "/proc/2"} {
		if _, err := os.Readlink(p + "/ns/mnt"); err == nil {
			return p
		}
	}
	return "/proc/1"
}

func sameMountNS() bool {
	self, err1 := os.Readlink("/proc/self/ns/mnt")
	init, err2 := os.Readlink(initProc() + "/ns/mnt")
	return err1 == nil && err2 == nil && self == init
}

// PinRoot returns the directory all grebpf pins live under, mounting bpffs
// on /sys/fs/bpf where it is missing.
//
// `ip netns exec` runs us in a private mount namespace with a fresh /sys:
// pins made in a bpffs mounted there would vanish, and the links with them,
// when the command exits. In that case we pin into the initial mount namespace's
// bpffs through /proc/1/root, so the data plane outlives the command and can be inspected
// from the host, and we refuse with the way out if it has none.
func PinRoot() (string, error) {
	if !sameMountNS() && !isBPFFS(bpffsPath) {
		host := filepath.Join(initProc(), "root", bpffsPath)
		if isBPFFS(host) {
			return filepath.Join(host, "grebpf"), nil
		}
		return "", errors.New("this mount namespace (ip netns exec?) has no persistent bpffs: run `grebpf --netns NAME …` instead, or mount one on the host first: mount -t bpf bpf /sys/fs/bpf")
	}
	if !isBPFFS(bpffsPath) {
		if err := os.MkdirAll(bpffsPath, 0o755); err != nil {
			return "", fmt.Errorf("create %s: %w", bpffsPath, err)
		}
		if err := unix.Mount("bpf", bpffsPath, "bpf", 0, "mode=0700"); err != nil {
			return "", fmt.Errorf("mount bpffs on %s: %w (mount it yourself: mount -t bpf bpf %s)", bpffsPath, err, bpffsPath)
		}
	}
	return filepath.Join(bpffsPath, "grebpf"), nil
}

// existingPinRoot is PinRoot for readers: it never mounts anything.
func existingPinRoot() string {
	if !sameMountNS() && !isBPFFS(bpffsPath) {
		return filepath.Join(initProc(), "root", bpffsPath, "grebpf")
	}
	return filepath.Join(bpffsPath, "grebpf")
}
