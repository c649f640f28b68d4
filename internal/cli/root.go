package cli

import (
	"github.com/spf13/cobra"
)

func (a *app) newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "banger",
		Short: "Disposable Linux microVMs on your own machine",
		Long: `banger runs disposable Linux microVMs on this machine: each VM gets a
copy-on-write root disk, a network, a guest agent and SSH, and boots under
Firecracker (or QEMU where Firecracker cannot run).

The CLI talks to the bangerd daemon, which it starts when it is not running.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.CompletionOptions.HiddenDefaultCmd = false
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&a.configPath, "config", "", "config file (default: $BANGER_CONFIG, then $XDG_CONFIG_HOME/banger/config.toml)")
	pf.StringVar(&a.socket, "socket", "", "bangerd API socket (default: <runtime_dir>/bangerd.sock)")
	pf.BoolVarP(&a.quiet, "quiet", "q", false, "print no progress, only results and errors")

	root.AddCommand(
		a.newVersionCmd(),
		a.newConfigCmd(),
		a.newDaemonCmd(),
		a.newOpCmd(),
		a.newVMCmd(),
		a.newSnapshotCmd(),
		a.newImageCmd(),
		a.newKernelCmd(),
		a.newDoctorCmd(),
		a.newUpdateCmd(),
	)
	return root
}

// exactArgs, maxArgs and minArgs are cobra validators whose errors are usage errors.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s takes %s (got %d arguments)", cmd.CommandPath(), what, len(args))
		}
		return noEmptyArgs(cmd, args)
	}
}

func maxArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) > n {
			return usagef("%s takes at most %s (got %d arguments)", cmd.CommandPath(), what, len(args))
		}
		return nil // vm create "" is the default image: it goes in no path
	}
}

func minArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return usagef("%s needs %s", cmd.CommandPath(), what)
		}
		return noEmptyArgs(cmd, args)
	}
}

// noEmptyArgs refuses an empty argument (an unset shell variable, as in
// banger vm rm "$VM"). Every argument these checks guard is a name, id,
// path or reference, and a name goes into an API path, where an empty
// segment cannot be carried: the daemon's router would clean
// /v1/vms//logs into /v1/vms/logs, another endpoint or another VM.
func noEmptyArgs(cmd *cobra.Command, args []string) error {
	for _, a := range args {
		if a == "" {
			return usagef("%s: an argument is empty (an unset variable?)", cmd.CommandPath())
		}
	}
	return nil
}

// group returns a command that only holds subcommands; run bare, it shows help.
func group(use, short string, subs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q for %q", args[0], cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	c.AddCommand(subs...)
	return c
}
