// Command vm runs a command, usually a Go test binary, inside QEMU on a
// Debian kernel, with the host's root filesystem shared in read-only (an
// overlay on top makes it writable in the VM), and exits with its status.
//
//	go run ./test/vm -kernel 6.1 -- CMD [ARGS…]
//	go test -exec 'go run ./test/vm -kernel 6.12 --' ./…
//
// It uses vng (virtme-ng) when installed, and otherwise its own runner:
// the kernel package fetched with apt-get download into a cache outside
// the repository (reused), a busybox initramfs built on the fly, QEMU under
// TCG. A boot that hangs is killed after -boot-timeout with the console's
// tail printed.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Markers the guest prints on the serial console.
const (
	startMarker = "GREBPF-VM-START"
	exitMarker  = "GREBPF-VM-EXIT="
)

// kernels maps a short name to the apt package name pattern; the newest
// matching package in the archive is used.
var kernels = map[string]*regexp.Regexp{
	"6.1":  regexp.MustCompile(`^linux-image-(6\.1\.0-\d+-amd64)$`),
	"6.12": regexp.MustCompile(`^linux-image-(6\.12\.\d+\+deb12-amd64)$`),
}

// Modules the initramfs loads to mount the host root (deps resolved from
// modules.dep). Built-in ones simply do not appear in modules.dep.
var bootModules = []string{"virtio_pci", "9pnet_virtio", "9p", "overlay"}

// Tools the runner needs on the host, and the Debian package of each.
var tools = [][2]string{
	{"qemu-system-x86_64", "qemu-system-x86"},
	{"cpio", "cpio"},
	{"depmod", "kmod"},
	{"dpkg-deb", "dpkg"},
	{"apt-get", "apt"},
	{"xz", "xz-utils"},
	{"gzip", "gzip"},
}

const busybox = "/bin/busybox" // from busybox-static

func main() {
	code, err := run()
	if err != nil {
		fmt.Fprintf(os.Stderr, "vm: %v\n", err)
		os.Exit(2)
	}
	os.Exit(code)
}

func run() (int, error) {
	fs := flag.NewFlagSet("vm", flag.ContinueOnError)
	kernel := fs.String("kernel", "6.12", "kernel: 6.1 or 6.12 (the newest Debian package of that series)")
	cache := fs.String("cache", envOr("GREBPF_VM_CACHE", "/var/cache/grebpf-vm"), "where kernels and initramfs are kept between runs")
	mem := fs.Int("mem", 2048, "guest memory, MiB")
	cpus := fs.Int("smp", 2, "guest CPUs")
	bootTimeout := fs.Duration("boot-timeout", 2*time.Minute, "kill the VM if the command has not started by then")
	timeout := fs.Duration("timeout", 40*time.Minute, "kill the VM if the command has not finished by then")
	// Multi-threaded TCG runs each vCPU on its own host thread, but races
	// with a kernel patching code another vCPU runs (seen: an int3 oops in
	// the XDP dispatcher while the bench attached programs). single runs
	// all vCPUs on one host thread: slower, but exact.
	tcg := fs.String("tcg", "multi", "TCG threading: multi or single")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2, err
	}
	cmd := fs.Args()
	if len(cmd) == 0 {
		return 2, errors.New("no command: vm -kernel 6.1 -- CMD [ARGS…]")
	}
	pattern, ok := kernels[*kernel]
	if !ok {
		return 2, fmt.Errorf("kernel %q: use 6.1 or 6.12", *kernel)
	}
	if *tcg != "multi" && *tcg != "single" {
		return 2, fmt.Errorf("tcg %q: use multi or single", *tcg)
	}
	if path, err := exec.LookPath("vng"); err == nil {
		return runVNG(path, *kernel, pattern, *cache, *mem, *cpus, cmd)
	}
	for _, t := range tools {
		if _, err := exec.LookPath(t[0]); err != nil {
			return 2, fmt.Errorf("%s not found: apt-get install %s", t[0], t[1])
		}
	}
	if !isStatic(busybox) {
		return 2, errors.New(busybox + " is missing or not static: apt-get install busybox-static")
	}
	k, err := fetchKernel(pattern, *cache)
	if err != nil {
		return 2, err
	}
	initrd, err := buildInitramfs(k)
	if err != nil {
		return 2, err
	}
	// Multi-threaded TCG now and then oopses a kernel while it patches its
	// own code early in boot (seen here: 1 boot in ~30 on 6.12). Before the
	// command has started, nothing is lost by booting again.
	for attempt := 1; ; attempt++ {
		code, err := boot(k, initrd, *mem, *cpus, *tcg, *bootTimeout, *timeout, cmd)
		var bf bootFailure
		if errors.As(err, &bf) && attempt < 3 {
			fmt.Fprintf(os.Stderr, "vm: boot %d failed (%v), booting again\n", attempt, err)
			continue
		}
		return code, err
	}
}

// bootFailure is a VM that died before the command started.
type bootFailure struct{ why string }

func (b bootFailure) Error() string { return b.why }

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// isStatic says whether an ELF file has no program interpreter.
func isStatic(path string) bool {
	b, err := os.ReadFile(path)
	return err == nil && bytes.HasPrefix(b, []byte("\x7fELF")) && !bytes.Contains(b[:min(len(b), 4096)], []byte("ld-linux"))
}

// kernelTree is an extracted kernel package.
type kernelTree struct {
	release string // uname -r
	root    string // extracted package root
}

func (k kernelTree) vmlinuz() string { return filepath.Join(k.root, "boot", "vmlinuz-"+k.release) }
func (k kernelTree) modules() string { return filepath.Join(k.root, "lib", "modules", k.release) }

// newestPackage finds the newest kernel package of a series in apt's lists.
func newestPackage(pattern *regexp.Regexp) (string, string, error) {
	out, err := exec.Command("apt-cache", "search", "--names-only", "^linux-image-").Output()
	if err != nil {
		return "", "", fmt.Errorf("apt-cache search: %w (run apt-get update)", err)
	}
	var best, release string
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(line, " ")
		m := pattern.FindStringSubmatch(name)
		if m != nil && (best == "" || versionLess(release, m[1])) {
			best, release = name, m[1]
		}
	}
	if best == "" {
		return "", "", fmt.Errorf("no package matching %s in apt's lists: run apt-get update", pattern)
	}
	return best, release, nil
}

// versionLess compares dotted/dashed numeric versions field by field.
func versionLess(a, b string) bool {
	split := func(s string) []int {
		var out []int
		for _, f := range regexp.MustCompile(`\d+`).FindAllString(s, -1) {
			n, _ := strconv.Atoi(f)
			out = append(out, n)
		}
		return out
	}
	return slices.Compare(split(a), split(b)) < 0
}

// fetchKernel downloads and extracts the kernel package once per release.
func fetchKernel(pattern *regexp.Regexp, cache string) (kernelTree, error) {
	pkg, release, err := newestPackage(pattern)
	if err != nil {
		return kernelTree{}, err
	}
	k := kernelTree{release: release, root: filepath.Join(cache, release)}
	done := filepath.Join(k.root, ".extracted")
	if _, err := os.Stat(done); err == nil {
		return k, nil
	}
	dl := filepath.Join(cache, "debs")
	if err := os.MkdirAll(dl, 0o755); err != nil {
		return k, err
	}
	fmt.Fprintf(os.Stderr, "vm: fetching %s into %s\n", pkg, cache)
	get := exec.Command("apt-get", "download", pkg)
	get.Dir = dl
	if out, err := get.CombinedOutput(); err != nil {
		return k, fmt.Errorf("apt-get download %s: %v: %s", pkg, err, lastLine(out))
	}
	debs, _ := filepath.Glob(filepath.Join(dl, pkg+"_*.deb"))
	if len(debs) == 0 {
		return k, fmt.Errorf("apt-get download %s left no .deb in %s", pkg, dl)
	}
	os.RemoveAll(k.root)
	if out, err := exec.Command("dpkg-deb", "-x", debs[len(debs)-1], k.root).CombinedOutput(); err != nil {
		return k, fmt.Errorf("dpkg-deb -x: %v: %s", err, lastLine(out))
	}
	// The package carries no modules.dep: modprobe in the guest needs it.
	if out, err := exec.Command("depmod", "-b", k.root, release).CombinedOutput(); err != nil {
		return k, fmt.Errorf("depmod: %v: %s", err, lastLine(out))
	}
	return k, os.WriteFile(done, nil, 0o644)
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// moduleOrder resolves names to module paths, dependencies first.
func moduleOrder(k kernelTree, names []string) ([]string, error) {
	f, err := os.Open(filepath.Join(k.modules(), "modules.dep"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	deps := map[string][]string{}
	byName := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		mod, rest, _ := strings.Cut(sc.Text(), ":")
		deps[mod] = strings.Fields(rest)
		base := filepath.Base(mod)
		base = strings.TrimSuffix(strings.TrimSuffix(base, ".xz"), ".ko")
		byName[strings.ReplaceAll(base, "-", "_")] = mod
	}
	var order []string
	seen := map[string]bool{}
	var visit func(string)
	visit = func(mod string) {
		if seen[mod] {
			return
		}
		seen[mod] = true
		// modules.dep lists every dependency, nearest last; load farthest first.
		for i := len(deps[mod]) - 1; i >= 0; i-- {
			visit(deps[mod][i])
		}
		order = append(order, mod)
	}
	for _, n := range names {
		if mod, ok := byName[n]; ok {
			visit(mod)
		} // absent from modules.dep: built in
	}
	return order, nil
}

const initScript = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.list); do insmod "/modules/$m" || echo "vm: insmod $m failed"; done
mkdir -p /lower /rw /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro hostroot /lower || echo "vm: mounting the host root failed"
mount -t tmpfs -o size=75% tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot || echo "vm: overlay failed"
mkdir -p /newroot/lib/modules
mount --bind "/newroot$(cat /modules.dir)" /newroot/lib/modules
for a in $(cat /proc/cmdline); do case "$a" in grebpf.stage2=*) stage2="${a#grebpf.stage2=}";; esac; done
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /bin/sh "$stage2"
`

// buildInitramfs writes a busybox initramfs for k, once.
func buildInitramfs(k kernelTree) (string, error) {
	out := filepath.Join(k.root, "initramfs.cpio.gz")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	dir, err := os.MkdirTemp("", "grebpf-initramfs")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	for _, d := range []string{"bin", "proc", "sys", "dev", "modules"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return "", err
		}
	}
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "busybox"), bb, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "init"), []byte(initScript), 0o755); err != nil {
		return "", err
	}
	mods, err := moduleOrder(k, bootModules)
	if err != nil {
		return "", err
	}
	var list []string
	for _, m := range mods {
		name := strings.TrimSuffix(filepath.Base(m), ".xz")
		data, err := os.ReadFile(filepath.Join(k.modules(), m))
		if err != nil {
			return "", err
		}
		if strings.HasSuffix(m, ".xz") { // busybox insmod does not read xz
			x := exec.Command("xz", "-dc")
			x.Stdin = bytes.NewReader(data)
			if data, err = x.Output(); err != nil {
				return "", fmt.Errorf("xz -d %s: %w", m, err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "modules", name), data, 0o644); err != nil {
			return "", err
		}
		list = append(list, name)
	}
	files := map[string]string{
		"modules.list": strings.Join(list, "\n") + "\n",
		"modules.dir":  filepath.Dir(k.modules()),
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			return "", err
		}
	}
	tmp := out + ".tmp"
	sh := exec.Command("sh", "-c", "find . | cpio -o -H newc --quiet | gzip -1 > "+strconv.Quote(tmp))
	sh.Dir = dir
	if b, err := sh.CombinedOutput(); err != nil {
		return "", fmt.Errorf("cpio: %v: %s", err, b)
	}
	return out, os.Rename(tmp, out)
}

// stage2 is run by the host's /bin/sh as the guest's init, in the shared
// root. It sets up what the tests expect of a machine and runs the command.
const stage2 = `mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs tmpfs /dev/shm
ln -sf /proc/self/fd /dev/fd && ln -sf fd/0 /dev/stdin && ln -sf fd/1 /dev/stdout && ln -sf fd/2 /dev/stderr
mount -t tmpfs tmpfs /run
mkdir -p /run/netns
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
ip link set lo up
hostname grebpf-vm
echo 1 > /proc/sys/kernel/sysrq
export HOME=/root PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
%s
cd %s || exit 1
echo %s
echo "vm: kernel $(uname -r)"
%s
echo "%s$?"
echo o > /proc/sysrq-trigger
sleep 10
`

func shellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// guestEnv is what the command inherits from the host: the tests' own
// switches and Go's settings.
func guestEnv() string {
	var lines []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "GREBPF_") || strings.HasPrefix(k, "GO") {
			lines = append(lines, "export "+shellQuote([]string{kv}))
		}
	}
	lines = append(lines, "export GREBPF_VM=1")
	return strings.Join(lines, "\n")
}

func boot(k kernelTree, initrd string, mem, cpus int, tcg string, bootTimeout, timeout time.Duration, cmd []string) (int, error) {
	wd, err := os.Getwd()
	if err != nil {
		return 2, err
	}
	tmp, err := os.MkdirTemp("", "grebpf-vm")
	if err != nil {
		return 2, err
	}
	defer os.RemoveAll(tmp)
	script := filepath.Join(tmp, "stage2.sh")
	body := fmt.Sprintf(stage2, guestEnv(), shellQuote([]string{wd}), startMarker, shellQuote(cmd), exitMarker)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		return 2, err
	}
	// The initramfs reads the stage-2 path from the kernel command line.
	qemu := exec.Command("qemu-system-x86_64",
		"-accel", "tcg,thread="+tcg, "-cpu", "max", "-M", "q35", "-nodefaults", "-no-reboot",
		"-m", strconv.Itoa(mem), "-smp", strconv.Itoa(cpus),
		"-display", "none", "-serial", "stdio",
		"-kernel", k.vmlinuz(), "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 quiet loglevel=3 grebpf.stage2="+script,
		"-fsdev", "local,id=root,path=/,security_model=none,readonly=on,multidevs=remap",
		"-device", "virtio-9p-pci,fsdev=root,mount_tag=hostroot",
	)
	stdout, err := qemu.StdoutPipe()
	if err != nil {
		return 2, err
	}
	qemu.Stderr = os.Stderr
	if err := qemu.Start(); err != nil {
		return 2, err
	}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			lines <- strings.TrimRight(sc.Text(), "\r")
		}
		close(lines)
	}()
	var tail []string
	started := false
	deadline := time.After(bootTimeout)
	overall := time.After(timeout)
	fail := func(why string) (int, error) {
		qemu.Process.Kill()
		qemu.Wait()
		fmt.Fprintf(os.Stderr, "vm: --- last %d console lines ---\n%s\n", len(tail), strings.Join(tail, "\n"))
		if !started {
			return 2, bootFailure{why}
		}
		return 2, errors.New(why)
	}
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				qemu.Wait()
				if started {
					return fail("the VM stopped before the command reported its exit status")
				}
				return fail("the VM stopped during boot")
			}
			tail = append(tail, l)
			if len(tail) > 40 {
				tail = tail[1:]
			}
			switch {
			case strings.HasPrefix(l, exitMarker):
				code, _ := strconv.Atoi(strings.TrimPrefix(l, exitMarker))
				qemu.Process.Kill()
				qemu.Wait()
				return code, nil
			case l == startMarker:
				started = true
				deadline = nil
			case started:
				fmt.Println(l)
			}
		case <-deadline:
			return fail(fmt.Sprintf("kernel %s did not start the command within %s", k.release, bootTimeout))
		case <-overall:
			return fail(fmt.Sprintf("the command did not finish within %s", timeout))
		}
	}
}

// runVNG delegates to virtme-ng, which boots the kernel with the host's
// root the same way.
func runVNG(vng, kernel string, pattern *regexp.Regexp, cache string, mem, cpus int, cmd []string) (int, error) {
	k, err := fetchKernel(pattern, cache)
	if err != nil {
		return 2, err
	}
	c := exec.Command(vng, "--run", k.vmlinuz(), "--memory", strconv.Itoa(mem)+"M", "--cpus", strconv.Itoa(cpus),
		"--user", "root", "--exec", "GREBPF_VM=1 "+shellQuote(cmd))
	c.Stdout, c.Stderr = os.Stdout, os.Stderr
	err = c.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	return 0, err
}
