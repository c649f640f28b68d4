package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"banger/internal/buildinfo"
	"banger/internal/config"
	"banger/internal/daemon/opstate"
)

// MainOptions adjust Main for tests.
type MainOptions struct {
	Stderr      io.Writer
	DirectKinds map[string]opstate.Func
}

// Main is bangerd's entry point: it parses flags, loads the config and runs
// the daemon until SIGTERM or SIGINT. It returns the process exit code.
// `bangerd helper` never gets here: cmd/bangerd hands it to privhelperd
// first, so that the root helper starts nothing of the daemon's.
func Main(args []string, mo MainOptions) int {
	stderr := mo.Stderr
	if stderr == nil {
		stderr = os.Stderr
	}
	fs := flag.NewFlagSet("bangerd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "config file (default: $BANGER_CONFIG, then $XDG_CONFIG_HOME/banger/config.toml)")
	socket := fs.String("socket", "", "API socket path (default: <runtime_dir>/bangerd.sock)")
	background := fs.Bool("background", false, "log only to the log file, not to stderr (used when the CLI starts the daemon)")
	version := fs.Bool("version", false, "print the version and exit")
	adopt := fs.Bool("adopt-store", false, "take banger.db as this state dir's store even though they do not match (an emptied, restored or foreign store); VM directories it does not know are moved aside, never deleted")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: bangerd [flags]\n       bangerd helper [flags]   (the privileged helper, as root)\n\nbangerd is banger's daemon. The banger CLI starts it on demand;\nrun it yourself only under systemd or to debug.\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bangerd: unexpected argument %q (see bangerd -h)\n", fs.Arg(0))
		return 2
	}
	if *version {
		fmt.Fprintf(stderr, "bangerd %s (api %d)\n", buildinfo.Version, buildinfo.APIVersion)
		return 0
	}
	loaded, err := config.Load(config.Options{Path: *cfgPath})
	if err != nil {
		fmt.Fprintf(stderr, "bangerd: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	err = Run(ctx, Options{
		Config:      loaded.Config,
		ConfigPath:  loaded.Path,
		Socket:      *socket,
		Stderr:      stderr,
		Background:  *background,
		DirectKinds: mo.DirectKinds,
		AdoptStore:  *adopt,
	})
	if err != nil {
		fmt.Fprintf(stderr, "bangerd: %v\n", err)
		return 1
	}
	return 0
}
