package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

func versionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "The module version and commit grebpf was built from",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			info, _ := debug.ReadBuildInfo()
			_, err := fmt.Fprintln(g.out, versionLine(info))
			return err
		},
	}
}

// versionLine says what a build is from its build info: the module
// version and the commit Go stamped (make build stamps it; a build from
// outside a git checkout has none).
func versionLine(info *debug.BuildInfo) string {
	version, commit, modified := "unknown", "unknown", ""
	goVersion := runtime.Version()
	if info != nil {
		version = info.Main.Version
		goVersion = info.GoVersion
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					modified = ", modified"
				}
			}
		}
	}
	return fmt.Sprintf("grebpf %s (commit %s%s, %s %s/%s)", version, commit, modified, goVersion, runtime.GOOS, runtime.GOARCH)
}
