package bpf

import (
	"errors"
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
)

func TestLoad(t *testing.T) {
	var objs GrebpfObjects
	err := LoadGrebpfObjects(&objs, nil)
	var verr *ebpf.VerifierError
	if errors.As(err, &verr) {
		t.Fatal(fmt.Sprintf("%+v", verr))
	}
	if err != nil {
		t.Fatal(err)
	}
	objs.Close()
}
