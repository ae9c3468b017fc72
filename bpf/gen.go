// Package bpf holds grebpf's data plane: the C programs and the Go bindings
// bpf2go generates from them.
package bpf

//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -tags linux -target bpfel -type tunnel -type outer_addr -type endpoint_key -type peer_key -type seqno -type endpoint -type tunnel_counters -type reason -type attachment -type decap_attach -type tc_attach -type path_mtu Grebpf grebpf.c -- -I./include -I/usr/include/x86_64-linux-gnu -O2 -g -Wall -Werror -mcpu=v3
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -tags linux -target bpfel Bench bench.c -- -I./include -I/usr/include/x86_64-linux-gnu -O2 -g -Wall -Werror
