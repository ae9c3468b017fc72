package maps

import "github.com/grebpf/grebpf/bpf"

// Reason is why a program did not encapsulate or decapsulate a packet.
type Reason = bpf.GrebpfReason

// reasonInfo names each reason and says whether its packets are dropped;
// the order is enum reason in grebpf.h (a test checks they agree).
var reasonInfo = [...]struct {
	name string
	drop bool
}{
	bpf.GrebpfReasonREASON_NONE:           {"none", false},
	bpf.GrebpfReasonREASON_NOT_GRE:        {"not-gre", false},
	bpf.GrebpfReasonREASON_TRUNCATED:      {"truncated", true},
	bpf.GrebpfReasonREASON_OUTER_CHECKSUM: {"outer-checksum", true},
	bpf.GrebpfReasonREASON_OUTER_FRAGMENT: {"outer-fragment", true},
	bpf.GrebpfReasonREASON_UNKNOWN_PEER:   {"unknown-peer", false},
	bpf.GrebpfReasonREASON_BAD_VERSION:    {"bad-version", true},
	bpf.GrebpfReasonREASON_ROUTING:        {"routing", true},
	bpf.GrebpfReasonREASON_CSUM_FLAG:      {"csum-flag", true},
	bpf.GrebpfReasonREASON_SEQ_ORDER:      {"seq-order", true},
	bpf.GrebpfReasonREASON_KEY_MISMATCH:   {"key-mismatch", true},
	bpf.GrebpfReasonREASON_UNKNOWN_INNER:  {"unknown-inner", true},
	bpf.GrebpfReasonREASON_DECAP_FAILED:   {"decap-failed", true},
	bpf.GrebpfReasonREASON_NO_TUNNEL:      {"no-tunnel", true},
	bpf.GrebpfReasonREASON_ENCAP_FAILED:   {"encap-failed", true},
	bpf.GrebpfReasonREASON_NO_OUTER_ROUTE: {"no-outer-route", true},
	bpf.GrebpfReasonREASON_OUTER_TOO_BIG:  {"outer-too-big", true},
	bpf.GrebpfReasonREASON_INNER_SOURCE:   {"inner-source", true},
	bpf.GrebpfReasonREASON_ECN_NOT_ECT:    {"ecn-not-ect", true},
	bpf.GrebpfReasonREASON_OUTER_OPTIONS:  {"outer-options", true},
	bpf.GrebpfReasonREASON_SOURCE_ROUTE:   {"source-route", true},
	bpf.GrebpfReasonREASON_SOURCE_ROUTED:  {"source-routed", false},
	bpf.GrebpfReasonREASON_PATH_MTU:       {"path-mtu", false},
	bpf.GrebpfReasonREASON_FRAG_NEEDED:    {"frag-needed", true},
	bpf.GrebpfReasonREASON_GRE_CHECKSUM:   {"gre-checksum", true},
}

// ReasonName is the name stats print for r.
func ReasonName(r Reason) string { return reasonInfo[r].name }

// ReasonDrops says whether packets counted under r were dropped (else passed
// to the stack untouched).
func ReasonDrops(r Reason) bool { return reasonInfo[r].drop }
