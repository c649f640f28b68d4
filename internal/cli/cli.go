package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"banger/internal/config"
	"banger/internal/rpc"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// usageError marks a mistake in how a command was called.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// app holds what every command shares: streams, global flags, and the lazily
// loaded config and daemon client.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string

	configPath string
	socket     string
	quiet      bool

	loaded *config.Loaded
	client *rpc.Client
	warned bool

	// daemonBin, when set, is the bangerd startDaemon runs (banger update
	// starts the one of the install it updates).
	daemonBin string
	// killHungDaemon makes startDaemon kill a bangerd it started that did
	// not answer in time, instead of leaving it to finish its start.
	killHungDaemon bool
}

// Main runs the CLI with os.Args and returns the exit code.
func Main() int {
	return Run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
}

// Run runs the CLI with the given arguments and streams.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr, getenv: os.Getenv}
	root := a.newRoot()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if a.client != nil {
		a.client.Close()
	}
	if err == nil {
		return ExitOK
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	for _, l := range errorLines(err) {
		fmt.Fprintf(stderr, "banger: %s\n", printableLines(l))
	}
	if isUsage(err) {
		fmt.Fprintln(stderr, "Run 'banger --help' or add --help to a command for usage.")
		return ExitUsage
	}
	return ExitFailure
}

// exitError carries an exit code with nothing more to print.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func isUsage(err error) bool {
	var ue usageError
	if errors.As(err, &ue) {
		return true
	}
	// cobra reports unknown commands and flag problems as plain errors.
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "flag needs an argument", "invalid argument", "required flag", "accepts ", "requires at least", "requires at most", "if any flags in the group"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// oneLine folds a multi-line error so the cause chain reads on one line,
// except for a trailing block (such as a log tail) introduced by "\n\n".
func oneLine(err error) string {
	msg := err.Error()
	head, tail, found := strings.Cut(msg, "\n\n")
	head = strings.Join(strings.Fields(head), " ")
	if found {
		return head + "\n\n" + strings.TrimRight(tail, "\n")
	}
	return head
}

// errorLines is what Run prints for err, one entry a line: each error
// joined in err (the problems of a config file, say) on a line of its
// own, after whatever wraps them all; anything else as oneLine folds it.
func errorLines(err error) []string {
	var j interface{ Unwrap() []error }
	if errors.As(err, &j) {
		if prefix, ok := strings.CutSuffix(err.Error(), j.(error).Error()); ok {
			prefix = strings.Join(strings.Fields(prefix), " ")
			if prefix != "" {
				prefix += " "
			}
			var out []string
			for _, e := range j.Unwrap() {
				for _, l := range errorLines(e) {
					out = append(out, prefix+l)
				}
			}
			return out
		}
	}
	return []string{oneLine(err)}
}

func (a *app) config() (*config.Loaded, error) {
	if a.loaded != nil {
		return a.loaded, nil
	}
	l, err := config.Load(config.Options{Path: a.configPath, Getenv: a.getenv})
	if err != nil {
		return nil, err
	}
	a.loaded = l
	return l, nil
}

func (a *app) warnf(format string, args ...any) {
	fmt.Fprintf(a.stderr, "banger: warning: "+format+"\n", args...)
}
