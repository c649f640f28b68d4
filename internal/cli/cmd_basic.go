package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"banger/internal/buildinfo"
	"banger/internal/config"
	"banger/internal/rpc"
)

func (a *app) newVersionCmd() *cobra.Command {
	var out outputFormat
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version of the CLI and of the running daemon",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			type daemonInfo struct {
				Running bool   `json:"running"`
				Version string `json:"version,omitempty"`
				API     int    `json:"api,omitempty"`
				PID     int    `json:"pid,omitempty"`
				Error   string `json:"error,omitempty"`
			}
			res := struct {
				CLI    string     `json:"cli"`
				API    int        `json:"api"`
				Daemon daemonInfo `json:"daemon"`
			}{CLI: buildinfo.Version, API: buildinfo.APIVersion}
			c, v, err := a.probe(cmd.Context())
			var unreachable *rpc.DaemonUnreachableError
			switch {
			case err == nil:
				c.Close()
				res.Daemon = daemonInfo{Running: true, Version: v.Version, API: v.API, PID: v.PID}
			case errors.As(err, &unreachable):
			default:
				res.Daemon.Error = err.Error()
			}
			if out.json() {
				return writeJSON(a.stdout, res)
			}
			fmt.Fprintf(a.stdout, "banger  %s (api %d)\n", res.CLI, res.API)
			switch {
			case res.Daemon.Running:
				fmt.Fprintf(a.stdout, "bangerd %s (api %d, pid %d)\n", res.Daemon.Version, res.Daemon.API, res.Daemon.PID)
				if res.Daemon.Version != res.CLI {
					a.warnf("the daemon comes from another build; run `banger daemon restart`")
				}
			case res.Daemon.Error != "":
				fmt.Fprintf(a.stdout, "bangerd unknown: %s\n", res.Daemon.Error)
			default:
				fmt.Fprintln(a.stdout, "bangerd not running (the CLI starts it when needed)")
			}
			return nil
		},
	}
	addOutputFlag(cmd, &out)
	return cmd
}

func (a *app) newConfigCmd() *cobra.Command {
	var out outputFormat
	show := &cobra.Command{
		Use:   "show",
		Short: "Print the effective configuration and where each value comes from",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := a.config()
			if err != nil {
				return err
			}
			settings := l.Settings()
			if out.json() {
				return writeJSON(a.stdout, struct {
					File      string           `json:"file"`
					FileFound bool             `json:"file_found"`
					Settings  []config.Setting `json:"settings"`
				}{l.Path, l.FileFound, settings})
			}
			found := "found"
			if !l.FileFound {
				found = "not found, defaults apply"
			}
			fmt.Fprintf(a.stdout, "# config file: %s (%s)\n", l.Path, found)
			tw := newTable(a.stdout, "KEY", "VALUE", "SOURCE")
			for _, s := range settings {
				row(tw, s.Key, orDash(s.Value), s.Source.String())
			}
			return tw.Flush()
		},
	}
	addOutputFlag(show, &out)
	keys := &cobra.Command{
		Use:   "keys",
		Short: "List every config key",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(*cobra.Command, []string) error {
			for _, k := range config.Keys() {
				fmt.Fprintln(a.stdout, k)
			}
			return nil
		},
	}
	return group("config", "Inspect banger's configuration", show, keys)
}
