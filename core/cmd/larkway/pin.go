package main

import (
	"fmt"
	"io"
	"os/exec"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/larkway/larkway/core/internal/pluginhost"
)

const pinUsage = `Usage: larkway plugin pin [--files-only] EXECUTABLE [FILE...]

Prints the pins to paste into the plugin's entry under plugins: in the core's
config: sha256 for EXECUTABLE (looked up in $PATH when it has no slash, as the
core does) and a files: entry for each FILE (the script an interpreter runs,
the modules it imports). With --files-only every path is a files: entry and
the executable stays unpinned. Relative paths are resolved against the core's
working directory when it runs: run this from there.

Example (a Python plugin):
  larkway plugin pin .tools/pyenv/bin/python plugins/py-echo/main.py
`

// pinCmd hashes the files a plugin runs and prints them as config YAML.
func pinCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("plugin pin", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, pinUsage) }
	filesOnly := fs.Bool("files-only", false, "pin every path under files:, none as the executable")
	pos, flags := splitArgs(args, nil)
	if err := parse(fs, flags); err != nil {
		return err
	}
	if len(pos) == 0 {
		return fmt.Errorf("%w: plugin pin needs the executable's path (and its scripts')\n%s", errUsage, pinUsage)
	}
	root := &yaml.Node{Kind: yaml.MappingNode,
		HeadComment: "larkway plugin pin: paste into the plugin's entry under plugins:"}
	files := pos
	if !*filesOnly {
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
