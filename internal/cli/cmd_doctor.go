package cli

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/buildinfo"
	"banger/internal/daemon/privhelper"
	"banger/internal/doctor"
	"banger/internal/rpc"
)

func (a *app) newDoctorCmd() *cobra.Command {
	var out outputFormat
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check this host for what banger needs, and say how to fix what is missing",
		Long: `doctor checks this host for what banger needs: a VMM (Firecracker with
/dev/kvm, or QEMU), what can boot here (a /dev/kvm from kvm_pvm boots only
QEMU under TCG), the state dir's free space and copy-on-write support, the
SSH key, the config file, the daemon, and the kernel features behind
networking and device-mapper. The VMM and disk choices are bangerd's own
rules, in its words. Each line says ok, warn or fail, what was found, and
for anything not ok how to fix it.

It exits 1 when a check fails (banger cannot work as configured); warnings
never change the exit code. It does not start the daemon.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			in := doctor.Inputs{
				Host:       doctor.SystemHost(),
				CLIVersion: buildinfo.Version,
				APIVersion: buildinfo.APIVersion,
			}
			l, err := a.config()
			if err != nil {
				in.ConfigErr = err
			} else {
				c := l.Config
				in.ConfigPath, in.ConfigFound = l.Path, l.FileFound
				in.Config = &doctor.Settings{
					VMM: c.VMM, COW: c.COW, FirecrackerBin: c.FirecrackerBin, QemuBin: c.QemuBin,
					StateDir: c.StateDir, SSHKeyPath: c.SSHKeyPath, Network: c.Network, HelperSocket: c.HelperSocket,
				}
				if in.Host.UID != 0 {
					in.Helper = probeHelper(ctx, c.HelperSocket, c.StateDir)
				}
			}
			if err == nil || a.socket != "" {
				in.Daemon = a.doctorProbe(cmd)
			}
			results := doctor.Run(ctx, in)
			if out.json() {
				if err := writeJSON(a.stdout, results); err != nil {
					return err
				}
			} else {
				tw := newTable(a.stdout, "STATUS", "CHECK", "FINDING")
				for _, r := range results {
					finding := r.Detail
					if r.Fix != "" {
						finding += " -- fix: " + r.Fix
					}
					row(tw, string(r.Status), r.Name, finding)
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				n := doctor.Count(results)
				fmt.Fprintf(a.stdout, "\n%d ok, %d %s, %d %s\n", n[doctor.OK],
					n[doctor.Warn], plural(n[doctor.Warn], "warning"), n[doctor.Fail], plural(n[doctor.Fail], "failure"))
			}
			if doctor.Failed(results) {
				return exitError{ExitFailure}
			}
			return nil
		},
	}
	addOutputFlag(cmd, &out)
	return cmd
}

// doctorProbe asks the daemon for its version without starting it.
func (a *app) doctorProbe(cmd *cobra.Command) *doctor.Daemon {
	d := &doctor.Daemon{}
	d.Socket, _ = a.socketPath()
	c, v, err := a.probe(cmd.Context())
	var unreachable *rpc.DaemonUnreachableError
	switch {
	case err == nil:
		c.Close()
		d.Running, d.Version, d.API, d.PID = true, v.Version, v.API, v.PID
	case errors.As(err, &unreachable):
	default:
		d.Err = err
	}
	return d
}

// probeHelper asks the privileged helper who it is and whether it can make
// dm snapshots.
func probeHelper(ctx context.Context, socket, stateDir string) *doctor.Helper {
	h := &doctor.Helper{Socket: socket, Want: privhelper.ProtocolVersion}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c := privhelper.Client{Socket: socket}
	r, err := c.Do(ctx, privhelper.Request{Op: privhelper.OpHello})
	if err != nil {
		h.Err = err
		return h
	}
	h.Version, h.Protocol = r.Version, r.Protocol
	if h.Protocol == h.Want {
		if err := c.SnapshotsAvailable(ctx); err != nil {
			h.Snapshots = err.Error()
		} else if r.StateDir == "" {
			// The daemon's rule (privileged.disks): the helper takes disk
			// files only from the state dir it knows for this user.
			h.Snapshots = "the helper knows no state dir of yours: ~/.local/state/banger must exist and belong to you"
		} else if real, err := filepath.EvalSymlinks(stateDir); err != nil || real != r.StateDir {
			h.Snapshots = fmt.Sprintf("the helper accepts disk files only in %s, not state_dir %s", r.StateDir, stateDir)
		}
	}
	return h
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
