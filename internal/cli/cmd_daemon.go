package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/rpc"
)

// newDaemonCmd builds `banger daemon` and its subcommands.
func (a *app) newDaemonCmd() *cobra.Command {
	return group("daemon", "Start, stop and inspect bangerd",
		a.newDaemonStatusCmd(), a.newDaemonStartCmd(), a.newDaemonStopCmd(),
		a.newDaemonRestartCmd(), a.newDaemonLogsCmd())
}

// newDaemonStatusCmd builds `banger daemon status`: whether bangerd runs,
// which version, and where.
func (a *app) newDaemonStatusCmd() *cobra.Command {
	var statusOut outputFormat
	status := &cobra.Command{
		Use:   "status",
		Short: "Say whether bangerd runs, which version, and where",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, v, err := a.probe(cmd.Context())
			var unreachable *rpc.DaemonUnreachableError
			if errors.As(err, &unreachable) {
				if statusOut.json() {
					return writeJSON(a.stdout, map[string]any{"running": false, "socket": unreachable.Socket})
				}
				fmt.Fprintf(a.stdout, "bangerd is not running (socket %s)\n", unreachable.Socket)
				return exitError{3}
			}
			if err != nil {
				return err
			}
			c.Close()
			if statusOut.json() {
				return writeJSON(a.stdout, map[string]any{"running": true, "daemon": v})
			}
			tw := newTable(a.stdout, "FIELD", "VALUE")
			row(tw, "state", "running")
			row(tw, "version", fmt.Sprintf("%s (api %d)", v.Version, v.API))
			row(tw, "pid", fmt.Sprint(v.PID))
			row(tw, "up since", v.StartedAt.Local().Format(time.RFC3339)+" ("+ago(v.StartedAt)+")")
			row(tw, "socket", v.Socket)
			row(tw, "state dir", v.StateDir)
			row(tw, "log", v.LogFile)
			if err := tw.Flush(); err != nil {
				return err
			}
			a.checkVersion(v)
			return nil
		},
	}
	addOutputFlag(status, &statusOut)
	return status
}

// newDaemonStartCmd builds `banger daemon start`.
func (a *app) newDaemonStartCmd() *cobra.Command {
	start := &cobra.Command{
		Use:   "start",
		Short: "Start bangerd in the background if it is not running",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.daemon(cmd.Context())
			if err != nil {
				return err
			}
			v, err := c.Version(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "bangerd %s running (pid %d)\n", v.Version, v.PID)
			return nil
		},
	}
	return start
}

// newDaemonStopCmd builds `banger daemon stop`.
func (a *app) newDaemonStopCmd() *cobra.Command {
	stop := &cobra.Command{
		Use:   "stop",
		Short: "Stop bangerd, cancelling its running operations",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			was, err := a.stopDaemon(cmd.Context())
			if err != nil {
				return err
			}
			if was {
				fmt.Fprintln(a.stdout, "bangerd stopped")
			} else {
				fmt.Fprintln(a.stdout, "bangerd was not running")
			}
			return nil
		},
	}
	return stop
}

// newDaemonRestartCmd builds `banger daemon restart`.
func (a *app) newDaemonRestartCmd() *cobra.Command {
	restart := &cobra.Command{
		Use:   "restart",
		Short: "Stop bangerd and start the one that belongs to this CLI",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := a.stopDaemon(cmd.Context()); err != nil {
				return err
			}
			c, v, err := a.startDaemon(cmd.Context())
			if err != nil {
				return err
			}
			a.client = c
			fmt.Fprintf(a.stdout, "bangerd %s running (pid %d)\n", v.Version, v.PID)
			return nil
		},
	}
	return restart
}

// newDaemonLogsCmd builds `banger daemon logs`.
func (a *app) newDaemonLogsCmd() *cobra.Command {
	var follow bool
	var lines int
	logs := &cobra.Command{
		Use:   "logs",
		Short: "Print the daemon log",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, err := a.logPath()
			if err != nil {
				return err
			}
			return printLog(cmd.Context(), a.stdout, path, lines, follow)
		},
	}
	logs.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing lines as they are written")
	logs.Flags().IntVarP(&lines, "lines", "n", 50, "how many of the last lines to print (0 = all)")
	return logs
}

// printLog prints the last n lines of path, then with follow keeps printing
// what is appended until ctx ends.
func printLog(ctx context.Context, w io.Writer, path string, n int, follow bool) error {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("no daemon log at %s yet: bangerd has not run with this state dir", path)
		}
		return err
	}
	defer f.Close()
	var last []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		last = append(last, sc.Text())
		if n > 0 && len(last) > n {
			last = last[1:]
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if len(last) > 0 {
		fmt.Fprintln(w, strings.Join(last, "\n"))
	}
	if !follow {
		return nil
	}
	r := bufio.NewReader(f)
	var partial string
	for {
		line, err := r.ReadString('\n')
		partial += line
		if err == nil {
			fmt.Fprint(w, partial)
			partial = ""
			continue
		}
		if !errors.Is(err, io.EOF) {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}
