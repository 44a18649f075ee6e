// Command larkway is the one larkway binary: the core (serve), the Lark
// emulator (emulator), a sample-event sender (send), the admin API client
// (plugin, dlq, actions), the load generator (bench), version and shell completion.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// errUsage marks a command-line mistake: exit code 2 and a pointer to the
// help. Every error cobra returns before a command runs is one too.
var errUsage = errors.New("usage")

// usageError is a command-line mistake with its own message.
type usageError struct {
	msg   string
	shown bool // the usage text is already printed
}

func (e *usageError) Error() string        { return e.msg }
func (e *usageError) Is(target error) bool { return target == errUsage }

func usagef(format string, a ...any) error {
	return &usageError{msg: fmt.Sprintf(format, a...)}
}

// Commands are listed in the order they are added: a workday's.
func init() { cobra.EnableCommandSorting = false }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command and returns the process exit code: 0 on
// success (and for help), 2 for a command-line mistake, 1 for any other
// error. Errors are printed once, to stderr, prefixed by the command path.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	// A command that ran returns its own errors; anything cobra refuses
	// before that (flags, arguments, unknown commands) is a usage error.
	ran := false
	markRun(root, &ran)
	if args == nil {
		args = []string{} // nil would make cobra read os.Args
	}
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	path := "larkway"
	if cmd != nil {
		path = cmd.CommandPath()
	}
	fmt.Fprintf(stderr, "%s: %s\n", path, strings.TrimRight(err.Error(), "\n"))
	var ue *usageError
	switch {
	case errors.As(err, &ue) && ue.shown:
		return 2
	case !ran || errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", path)
		return 2
	default:
		return 1
	}
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:     "larkway",
		Short:   "a gRPC event-processing platform for Feishu/Lark bots",
		Long:    "larkway — a gRPC event-processing platform for Feishu/Lark bots",
		Version: version,
		// run prints errors itself, once; help is asked for, not shown
		// after every mistake.
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetVersionTemplate("larkway {{.Version}}\n")
	root.SetUsageTemplate(usageTemplate(true))
	groupCmd(root, stderr)
	root.AddCommand(
		newServeCmd(stdout, stderr),
		newEmulatorCmd(stderr),
		newSendCmd(stdout),
		newPluginCmd(stdout, stderr),
		newDLQCmd(stdout, stderr),
		newReplayCmd(stdout),
		newActionsCmd(stdout, stderr),
		newBenchCmd(stdout, stderr),
		newLoadgenCmd(stdout),
		&cobra.Command{
			Use:   "version",
			Short: "Print the version",
			Args:  noArgs,
			RunE: func(*cobra.Command, []string) error {
				_, err := fmt.Fprintln(stdout, "larkway", version)
				return err
			},
		},
	)
	root.SetHelpCommand(newHelpCmd(root))
	// Added here rather than by Execute so that markRun sees them.
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	return root
}

// groupCmd makes c a command that only holds subcommands: without one it
// prints its usage to stderr (exit 2); an unknown one is refused with
// suggestions.
func groupCmd(c *cobra.Command, stderr io.Writer) {
	c.SuggestionsMinimumDistance = 2
	c.Args = func(c *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		return unknownCommand(c, args[0])
	}
	c.RunE = func(c *cobra.Command, _ []string) error {
		fmt.Fprint(stderr, c.UsageString())
		return &usageError{msg: "missing command", shown: true}
	}
}

// unknownCommand says so in cobra's words, with cobra's suggestions.
func unknownCommand(c *cobra.Command, name string) error {
	msg := fmt.Sprintf("unknown command %q for %q", name, c.CommandPath())
	if s := c.SuggestionsFor(name); len(s) > 0 {
		msg += "\n\nDid you mean this?\n\t" + strings.Join(s, "\n\t") + "\n"
	}
	return usagef("%s", msg)
}

// newHelpCmd replaces cobra's help command, which exits 0 on an unknown
// topic.
func newHelpCmd(root *cobra.Command) *cobra.Command {
	return &cobra.Command{
		Use:   "help [COMMAND...]",
		Short: "Help about any command",
		Long:  `Help prints the help of any command, e.g. "larkway help plugin swap".`,
		ValidArgsFunction: func(c *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			target, rest, err := root.Find(args)
			if err != nil || len(rest) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var out []cobra.Completion
			for _, sub := range target.Commands() {
				if sub.IsAvailableCommand() && strings.HasPrefix(sub.Name(), toComplete) {
					out = append(out, cobra.CompletionWithDesc(sub.Name(), sub.Short))
				}
			}
			return out, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(c *cobra.Command, args []string) error {
			target, rest, err := root.Find(args)
			if err != nil || len(rest) > 0 {
				parent := target
				if parent == nil {
					parent = root
				}
				msg := fmt.Sprintf("unknown help topic %q", strings.Join(args, " "))
				if len(rest) > 0 {
					if s := parent.SuggestionsFor(rest[0]); len(s) > 0 {
						msg += "\n\nDid you mean this?\n\t" + strings.Join(s, "\n\t") + "\n"
					}
				}
				return usagef("%s", msg)
			}
			target.InitDefaultHelpFlag()
			target.InitDefaultVersionFlag()
			return target.Help()
		},
	}
}

// markRun sets *ran when any command's RunE starts.
func markRun(c *cobra.Command, ran *bool) {
	if f := c.RunE; f != nil {
		c.RunE = func(c *cobra.Command, args []string) error {
			*ran = true
			return f(c, args)
		}
	}
	for _, sub := range c.Commands() {
		markRun(sub, ran)
	}
}

// noArgs refuses positional arguments.
func noArgs(_ *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	return nil
}

// exactArgs wants one argument per name and says which are missing.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) > len(names) {
			return usagef("unexpected argument %q", args[len(names)])
		}
		return missingArgs(names, args)
	}
}

// minArgs wants at least one argument per name.
func minArgs(names ...string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error { return missingArgs(names, args) }
}

func missingArgs(names, args []string) error {
	switch missing := names[min(len(args), len(names)):]; len(missing) {
	case 0:
		return nil
	case 1:
		return usagef("missing argument %s", missing[0])
	default:
		return usagef("missing arguments %s", strings.Join(missing, " "))
	}
}

// usageTemplate is cobra's, shortened: a command either runs or holds
// commands, never both, and with inherited false the parent's persistent
// flags (the admin API's) are left out, for `plugin pin`, which runs
// locally and refuses them.
func usageTemplate(inherited bool) string {
	t := `Usage:{{if .HasAvailableSubCommands}}
  {{.CommandPath}} COMMAND{{else}}
  {{.UseLine}}{{end}}{{if .HasExample}}

Examples:
{{.Example}}{{end}}{{if .HasAvailableSubCommands}}

Commands:{{range .Commands}}{{if (or .IsAvailableCommand (eq .Name "help"))}}
  {{rpad .Name .NamePadding }} {{.Short}}{{end}}{{end}}{{end}}{{if .HasAvailableLocalFlags}}

Flags:
{{.LocalFlags.FlagUsages | trimTrailingWhitespaces}}{{end}}`
	if inherited {
		t += `{{if .HasAvailableInheritedFlags}}

Flags of every {{.Parent.CommandPath}} command:
{{.InheritedFlags.FlagUsages | trimTrailingWhitespaces}}{{end}}`
	}
	return t + `{{if .HasAvailableSubCommands}}

Run "{{.CommandPath}} COMMAND --help" for a command's flags.{{end}}
`
}
