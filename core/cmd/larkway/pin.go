package main

import (
	"fmt"
	"io"
	"os/exec"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/larkway/larkway/core/internal/pluginhost"
)

func newPinCmd(stdout io.Writer) *cobra.Command {
	var filesOnly bool
	c := &cobra.Command{
		Use:   "pin EXECUTABLE [FILE...]",
		Short: "Print the sha256/files: pins to paste into the config",
		Long: `Prints the pins to paste into the plugin's entry under plugins: in the core's
config: sha256 for EXECUTABLE (looked up in $PATH when it has no slash, as the
core does) and a files: entry for each FILE (the script an interpreter runs,
the modules it imports). With --files-only every path is a files: entry and
the executable stays unpinned. Relative paths are resolved against the core's
working directory when it runs: run this from there.

It runs locally: the admin API flags of the other plugin commands don't apply.`,
		Example: `  larkway plugin pin .tools/pyenv/bin/python plugins/py-echo/main.py   # a Python plugin`,
		Args:    minArgs("EXECUTABLE"),
		RunE: func(c *cobra.Command, args []string) error {
			// plugin's persistent flags are parsed here too; refuse them
			// rather than ignore them.
			var set []string
			c.InheritedFlags().VisitAll(func(f *pflag.Flag) {
				if f.Changed {
					set = append(set, "--"+f.Name)
				}
			})
			if len(set) > 0 {
				return usagef("%s: plugin pin runs locally, without the admin API", strings.Join(set, ", "))
			}
			return pin(stdout, args, filesOnly)
		},
	}
	c.Flags().BoolVar(&filesOnly, "files-only", false, "pin every path under files:, none as the executable")
	c.SetUsageTemplate(usageTemplate(false))
	return c
}

// pin hashes the files a plugin runs and prints them as config YAML.
func pin(stdout io.Writer, pos []string, filesOnly bool) error {
	root := &yaml.Node{Kind: yaml.MappingNode,
		HeadComment: "larkway plugin pin: paste into the plugin's entry under plugins:"}
	files := pos
	if !filesOnly {
		path := pos[0]
		files = pos[1:]
		if !strings.ContainsRune(path, '/') {
			p, err := exec.LookPath(path)
			if err != nil {
				return fmt.Errorf("pinning: %w", err)
			}
			path = p
		}
		sum, err := pluginhost.FileSHA256(path)
		if err != nil {
			return fmt.Errorf("pinning: %w", err)
		}
		v := scalar(sum)
		v.LineComment = path
		root.Content = append(root.Content, scalar("sha256"), v)
	}
	if len(files) > 0 {
		seq := &yaml.Node{Kind: yaml.SequenceNode}
		for _, f := range files {
			sum, err := pluginhost.FileSHA256(f)
			if err != nil {
				return fmt.Errorf("pinning: %w", err)
			}
			seq.Content = append(seq.Content, &yaml.Node{Kind: yaml.MappingNode,
				Content: []*yaml.Node{scalar("path"), scalar(f), scalar("sha256"), scalar(sum)}})
		}
		root.Content = append(root.Content, scalar("files"), seq)
	}
	enc := yaml.NewEncoder(stdout)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return err
	}
	return enc.Close()
}

// scalar is a string node, quoted when YAML would read it as another type.
func scalar(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s} }
