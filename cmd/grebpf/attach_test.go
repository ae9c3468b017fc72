package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/grebpf/grebpf/internal/config"
)

// attachRouter parses attach's flags as the command does.
func attachRouter(args []string) (config.Router, error) {
	cmd := &cobra.Command{Use: "attach"}
	rf := addRouterFlags(cmd)
	if err := cmd.ParseFlags(args); err != nil {
		return config.Router{}, err
	}
	if err := cobra.NoArgs(cmd, cmd.Flags().Args()); err != nil {
		return config.Router{}, err
	}
	return rf.router()
}

func TestAttachFlags(t *testing.T) {
	r, err := attachRouter([]string{"--dev", "wan1", "--local", "10.100.0.1", "--remote", "10.200.0.1",
		"--overlay", "192.168.1.1", "--peer", "192.168.1.2", "--route", "172.16.200.0/24", "--route", "172.17.0.0/16",
		"--key", "9", "--ttl", "inherit", "--tos", "0x20", "--decap", "xdp", "--tc", "clsact", "--name", "hq"})
	if err != nil {
		t.Fatal(err)
	}
	want := config.Router{Device: "wan1", Decap: "xdp", TC: "clsact", Tunnels: []config.Tunnel{{
		Name: "hq", Local: "10.100.0.1", Remote: "10.200.0.1", Key: "9", TTL: "inherit", TOS: "0x20",
		Overlay: "192.168.1.1", Peer: "192.168.1.2", Routes: []string{"172.16.200.0/24", "172.17.0.0/16"}}}}
	if !reflect.DeepEqual(r, want) {
		t.Errorf("got %+v\nwant %+v", r, want)
	}
}

func TestAttachConfigFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.yaml")
	body := "device: eth9\ndecap: tc\ntunnels:\n  - {name: a, local: 1.1.1.1, remote: 2.2.2.2, overlay: 10.0.0.1, peer: 10.0.0.2}\n"
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	// Device-level flags next to --config override the file.
	r, err := attachRouter([]string{"--config", path, "--dev", "wan1", "--xdp-generic", "--decap", "xdp"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Device != "wan1" || r.Decap != "xdp" || !r.XDPGeneric || len(r.Tunnels) != 1 || r.Tunnels[0].Name != "a" {
		t.Errorf("got %+v", r)
	}
	if _, err := attachRouter([]string{"--config", path, "--route", "10.9.0.0/16"}); err == nil ||
		!strings.Contains(err.Error(), "either --config or tunnel flags") {
		t.Errorf("config plus tunnel flags: %v", err)
	}
	if _, err := attachRouter([]string{"--dev", "wan1", "stray"}); err == nil || !strings.Contains(err.Error(), `unknown command "stray"`) {
		t.Errorf("stray argument: %v", err)
	}
}
