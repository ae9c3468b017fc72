# grebpf: make demo (the seed scenario on the built-in lab), make test.
# Both install what they need first (Debian packages, Go modules): run as root.

SHELL := /bin/bash
GO ?= go
DEBS := clang-19 llvm-19 libbpf-dev bpftool iproute2 iputils-ping traceroute iperf3 tcpdump ethtool kmod \
	qemu-system-x86 busybox-static cpio xz-utils frr
KERNEL ?= 6.12

.PHONY: all build deps generate demo test test-vm bench bench-vm fuzz clean

all: build

build:
	$(GO) build -o bin/grebpf ./cmd/grebpf

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
	$(GO) test -count=1 -p 1 -timeout 20m -v ./... 2>&1 | tee test.log | grep -E '^\s*--- |^(ok|FAIL|panic)|iperf3 TCP'; \
		status=$${PIPESTATUS[0]}; echo "tests: $$(grep -c -- '--- PASS' test.log) passed, $$(grep -c -- '--- FAIL' test.log) failed (full log: test.log)"; exit $$status

# The same suite inside QEMU on a Debian kernel (KERNEL=6.1 or 6.12): one VM
# per test package, the host's root shared in, binaries built on the host.
# Single-threaded TCG: multi-threaded TCG oopses now and then while the
# kernel patches the XDP dispatcher, which these tests attach to.
test-vm: deps
	$(GO) build -o bin/vmrun ./test/vm
	$(GO) build -o bin/grebpf ./cmd/grebpf
	set -o pipefail; GREBPF_BIN=$(CURDIR)/bin/grebpf $(GO) test -count=1 -p 1 -timeout 60m -v \
		-exec "$(CURDIR)/bin/vmrun -kernel $(KERNEL) -tcg single --" ./... 2>&1 | tee test-vm-$(KERNEL).log | \
		grep -E '^\s*--- |^(ok|FAIL|panic)|iperf3 TCP|^vm: '; \
		status=$$?; echo "tests on $(KERNEL): $$(grep -c -- '--- PASS' test-vm-$(KERNEL).log) passed, $$(grep -c -- '--- FAIL' test-vm-$(KERNEL).log) failed (full log: test-vm-$(KERNEL).log)"; exit $$status

# Per-program cost (go test -bench), then grebpf bench on the host's lab.
bench: deps build
	$(GO) test -run '^$$' -bench . -count 3 ./bpf
	bin/grebpf bench

# grebpf bench in QEMU on a Debian kernel that has ip_gre (KERNEL=6.1 or
# 6.12): the README's results tables.
bench-vm: deps build
	$(GO) build -o bin/vmrun ./test/vm
	bin/vmrun -kernel $(KERNEL) -tcg single -- bin/grebpf bench

fuzz: deps
	$(GO) test -run '^$$' -fuzz FuzzDecap -fuzztime 60s ./bpf

clean:
	rm -rf bin test.log test-vm-*.log
