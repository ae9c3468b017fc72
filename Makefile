# grebpf: make demo (the seed scenario on the built-in lab), make test.
# Both install what they need first (Debian packages, Go modules): run as root.

SHELL := /bin/bash
GO ?= go
DEBS := clang-19 llvm-19 libbpf-dev bpftool iproute2 iputils-ping traceroute iperf3 tcpdump ethtool kmod bash-completion prometheus systemd \
	qemu-system-x86 busybox-static cpio xz-utils frr
KERNEL ?= 6.12
# In the emulated VMs, where Go runs several times slower: soak loops (hot
# upgrades, attach/detach cycles) run VM_SOAK_ROUNDS rounds, and the
# transaction tests fail every VM_STEP_STRIDE-th step and every one from
# the commit on. The host runs the full counts and every step.
VM_SOAK_ROUNDS ?= 8
VM_STEP_STRIDE ?= 3
# What one VM may take: one VM per test package, two for the integration
# package (below).
VM_TIMEOUT ?= 50m

.PHONY: all build deps generate demo test test-vm vm-bins test-vm-run bench bench-vm fuzz clean

all: build

build:
	$(GO) build -buildvcs=auto -o bin/grebpf ./cmd/grebpf

# Debian packages that are missing, then the Go modules.
deps:
	@missing=$$(for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	$(GO) mod download

# Regenerate the bpf2go bindings after changing bpf/*.c or bpf/include/*.h.
generate:
	$(GO) generate ./bpf

demo: deps build
	GREBPF=bin/grebpf scripts/demo.sh

# Unit (prog.Run), fuzz seeds, generated-code check, integration (netns lab).
# One package at a time: the integration tests own the lab's namespace names
# and measure throughput.
test: deps
	$(GO) vet ./...
	$(GO) test -count=1 -p 1 -timeout 60m -v ./... 2>&1 | tee test.log | grep -E '^\s*--- |^(ok|FAIL|panic)|iperf3 TCP'; \
		status=$${PIPESTATUS[0]}; echo "tests: $$(grep -c -- '--- PASS' test.log) passed, $$(grep -c -- '--- FAIL' test.log) failed (full log: test.log)"; exit $$status

# The same suite inside QEMU on a Debian kernel (KERNEL=6.1 or 6.12): one VM
# per test package, the host's root shared in, binaries built on the host.
# Single-threaded TCG: multi-threaded TCG oopses now and then while the
# kernel patches the XDP dispatcher, which these tests attach to.
test-vm: deps vm-bins test-vm-run

# What test-vm runs on the host: the runner, grebpf, and the second build
# the hot-upgrade test swaps in. Built once, so that test-vm-run for two
# kernels can run side by side.
vm-bins:
	$(GO) build -o bin/vmrun ./test/vm
	$(GO) build -buildvcs=auto -o bin/grebpf ./cmd/grebpf
	$(GO) build -o bin/grebpf-variant -ldflags "-X github.com/grebpf/grebpf/loader.buildVariant=1" ./cmd/grebpf

# The integration tests run in two VMs, the transaction and soak tests in
# the second, so that neither comes near VM_TIMEOUT.
VM_SOAK_TESTS := ^(TestAttachAllOrNothing|TestKilledMidway|TestAttachLock|TestHotUpgrade|TestNoLeaks)$$
VM_GO_TEST = GREBPF_BIN=$(CURDIR)/bin/grebpf GREBPF_BIN_VARIANT=$(CURDIR)/bin/grebpf-variant \
	GREBPF_SOAK_ROUNDS=$(VM_SOAK_ROUNDS) GREBPF_STEP_STRIDE=$(VM_STEP_STRIDE) $(GO) test -count=1 -p 1 -timeout 60m -v \
	-exec "$(CURDIR)/bin/vmrun -kernel $(KERNEL) -tcg single -timeout $(VM_TIMEOUT) --"

test-vm-run:
	set -o pipefail; { s=0; \
		$(VM_GO_TEST) $$($(GO) list ./... | grep -v '/grebpf/test$$') || s=1; \
		$(VM_GO_TEST) -skip '$(VM_SOAK_TESTS)' ./test || s=1; \
		$(VM_GO_TEST) -run '$(VM_SOAK_TESTS)' ./test || s=1; \
		exit $$s; } 2>&1 | tee test-vm-$(KERNEL).log | \
		grep -E '^\s*--- |^(ok|FAIL|panic)|iperf3 TCP|^vm: '; \
		status=$${PIPESTATUS[0]}; echo "tests on $(KERNEL): $$(grep -c -- '--- PASS' test-vm-$(KERNEL).log) passed, $$(grep -c -- '--- FAIL' test-vm-$(KERNEL).log) failed (full log: test-vm-$(KERNEL).log)"; exit $$status

# Per-program cost (go test -bench), then grebpf bench on the host's lab.
bench: deps build
	$(GO) test -run '^$$' -bench . -count 3 ./bpf
	bin/grebpf bench

# grebpf bench in QEMU on a Debian kernel that has ip_gre (KERNEL=6.1 or
# 6.12): the README's results tables.
bench-vm: deps build
	$(GO) build -o bin/vmrun ./test/vm
	bin/vmrun -kernel $(KERNEL) -tcg single -- bin/grebpf bench

# A fuzzing campaign: each program's fuzz target for FUZZ_EXECS executions
# (the one-counter and exact-transformation invariants on every input).
# A failing input lands in bpf/testdata/fuzz/, a seed from then on.
FUZZ_EXECS ?= 1000000
FUZZ_TARGETS := FuzzDecap FuzzDecapOuterIPv6 FuzzEncap FuzzFastpathLAN FuzzFastpathWAN
fuzz: deps
	set -o pipefail; for f in $(FUZZ_TARGETS); do \
		$(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZ_EXECS)x ./bpf 2>&1 | tee fuzz-$$f.log | \
			grep -v '^fuzz: elapsed' || exit 1; \
		echo "$$f: $$(grep -o 'execs: [0-9]*' fuzz-$$f.log | tail -1) in $$(grep -o 'elapsed: [0-9hms]*' fuzz-$$f.log | tail -1)"; \
	done

clean:
	rm -rf bin test.log test-vm-*.log fuzz-*.log
