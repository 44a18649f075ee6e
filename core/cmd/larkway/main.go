// Command larkway is the one larkway binary: the core (serve), the Lark
// emulator (emulator), a sample-event sender (send) and version.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// errUsage marks a command-line mistake: exit code 2 and the usage text.
var errUsage = errors.New("usage")

const usage = `larkway — a gRPC event-processing platform for Feishu/Lark bots

Usage:
  larkway serve --config FILE [--check]   run the core (or only validate the config)
  larkway emulator [--listen ADDR]         run the Lark OpenAPI emulator
  larkway send [flags]                     post a sample message event to a running core
  larkway plugin list|describe|swap|rollback|disable|enable|drain ...
                                           manage plugins through the admin API
  larkway plugin pin EXECUTABLE [FILE...]  print the pins of a plugin's files for the config
  larkway dlq list|show|replay|purge ...   inspect and replay dead letters
  larkway bench [flags]                    load generator and benchmarks with reference points
  larkway version                          print the version

Run "larkway COMMAND -h" for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serveCmd(ctx, args[1:], stdout, stderr)
	case "emulator":
		err = emulatorCmd(ctx, args[1:], stdout, stderr)
	case "send":
		err = sendCmd(ctx, args[1:], stdout, stderr)
	case "plugin":
		err = pluginCmd(ctx, args[1:], stdout, stderr)
	case "dlq":
		err = dlqCmd(ctx, args[1:], stdout, stderr)
	case "bench":
		err = benchCmd(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "larkway", version)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "larkway: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "larkway %s: %v\n", args[0], err)
		return 2
	default:
		fmt.Fprintf(stderr, "larkway %s: %v\n", args[0], err)
		return 1
	}
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("larkway "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parse parses flags and refuses stray arguments.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	return nil
}
