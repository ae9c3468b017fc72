package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// manCmd writes the man pages from the commands' own definitions, so
// they say what --help says.
func manCmd(g *globals) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:     "man --dir DIR",
		Short:   "Write grebpf's man pages (section 8) into a directory",
		Example: `  grebpf man --dir /usr/local/share/man/man8 && mandb -q`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("man: %w", err)
			}
			root := cmd.Root()
			root.DisableAutoGenTag = true
			header := &doc.GenManHeader{Title: "GREBPF", Section: "8", Source: "grebpf", Manual: "System Manager's Manual"}
			if err := doc.GenManTree(root, header, dir); err != nil {
				return fmt.Errorf("man: %w", err)
			}
			fmt.Fprintf(g.out, "grebpf: man pages in %s\n", dir)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "directory to write grebpf.8, grebpf-attach.8, … into")
	cmd.MarkFlagRequired("dir")
	cmd.MarkFlagDirname("dir")
	return cmd
}
