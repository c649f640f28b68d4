package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"banger/internal/catalog"
	"banger/internal/config"
	"banger/internal/daemon/golden"
	"banger/internal/daemon/imagemgr"
	"banger/internal/daemon/ociimage"
	"banger/internal/guest/initrd"
)

// wireImages gives the image manager its catalogs, local builders and OCI
// importer.
func wireImages(m *imagemgr.Manager, cfg config.Config, log *slog.Logger) error {
	ic, err := catalog.LoadImages()
	if err != nil {
		return fmt.Errorf("load the image catalog: %w", err)
	}
	kc, err := catalog.LoadKernels()
	if err != nil {
		return fmt.Errorf("load the kernel catalog: %w", err)
	}
	m.SetCatalogs(imagemgr.Catalogs{Images: ic, Kernels: kc, BaseURL: cfg.CatalogBaseURL})
	m.SetBuilders(map[string]imagemgr.Builder{
		"debootstrap": func(ctx context.Context, e catalog.Entry, dir string, p imagemgr.Progress) error {
			agent, err := agentBinary()
			if err != nil {
				return err
			}
			return golden.Build(ctx, e, dir, golden.Options{Agent: agent}, p)
		},
	}, ociImporter{limits: ociimage.Limits{MaxEntries: cfg.OCIMaxEntries, MaxPathBytes: int64(cfg.OCIMaxPathBytes)}, log: log})
	return nil
}

// sweepImageLeftovers removes what image and kernel operations of a daemon
// that died left: their work dirs under <state_dir>/tmp, older versions'
// temporary names beside images and kernels, and processes still running on
// them. Call it once at start, after wireImages and before the API serves
// (so that no operation of this daemon runs yet); it logs what it did and
// never stops the start.
func sweepImageLeftovers(ctx context.Context, m *imagemgr.Manager, log *slog.Logger) {
	rep, err := m.SweepLeftovers(ctx)
	for _, pid := range rep.Killed {
		log.Warn("killed a process left by an interrupted operation", "pid", pid)
	}
	for _, p := range rep.Removed {
		log.Warn("removed what an interrupted operation left", "path", p)
	}
	if err != nil {
		log.Error("sweeping what interrupted operations left", "error", err)
	}
}

// ociImporter adapts ociimage to the image manager, adding banger's guest
// pieces to every imported tree.
type ociImporter struct {
	limits ociimage.Limits // oci_max_entries, oci_max_path_bytes
	log    *slog.Logger
}

func (ociImporter) Digest(ctx context.Context, ref string, insecure bool) (string, error) {
	return ociimage.Digest(ctx, ref, ociimage.Options{Insecure: insecure})
}

func (o ociImporter) Import(ctx context.Context, ref, dest string, insecure bool, p imagemgr.Progress) (string, int64, error) {
	agent, err := agentBinary()
	if err != nil {
		return "", 0, err
	}
	res, err := ociimage.Import(ctx, ref, dest, ociimage.Options{
		Insecure: insecure,
		Limits:   o.limits,
		Extra:    func(root string) error { return addGuestPieces(root, agent) },
	}, p)
	if err != nil {
		return "", 0, err
	}
	reportWarnings(o.log, p, ref, res.Warnings)
	return res.Digest, res.Size, nil
}

// maxWarningPhases bounds how many of an import's warnings are shown as
// phases of its operation; the log has them all.
const maxWarningPhases = 5

// reportWarnings tells the user, through the operation's phases, and the
// log what an import could not reproduce exactly (an xattr left out, say).
func reportWarnings(log *slog.Logger, p imagemgr.Progress, ref string, warnings []string) {
	for i, w := range warnings {
		if log != nil {
			log.Warn("image import", "ref", ref, "warning", w)
		}
		switch {
		case i < maxWarningPhases:
			p.Phase("warning: " + w)
		case i == maxWarningPhases:
			p.Phase(fmt.Sprintf("and %d more warnings (see the bangerd log)", len(warnings)-maxWarningPhases))
		}
	}
}

// OCIInit is where banger's init for OCI images lives inside the guest.
// Such images rarely carry an init system, so VMs of OCI images boot with
// init= pointing here.
const OCIInit = "/.banger/init"

// ociInitScript is the init of VMs made from OCI images, in the shape of
// the test image's /sbin/init (scripts/make-test-image.sh): this shell stays
// PID 1, so orphans are reaped, and runs `banger-vsock-agent init` as its
// child. The agent must not be PID 1: reaping with wait(-1) would take the
// exit statuses of the commands it runs. The agent mounts what is missing
// (/proc, /sys, /dev, /dev/pts, /run; / read-write), serves while it applies
// the VM's settings, and then starts sshd, when the image has one, with this
// boot's keys in place. A host key is made at first boot when there is none
// (ed25519 only: RSA key generation takes seconds under emulation), so every
// VM has its own. When the agent exits the guest
// powers off. POSIX sh only: an image may have nothing but busybox.
const ociInitScript = `#!/bin/sh
# Written by banger: the init of VMs made from OCI images. This shell stays
# PID 1 (it reaps orphans); banger-vsock-agent init mounts the basics, applies
# the VM's settings while it serves, then starts sshd when the image has one.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
agent=/usr/local/bin/banger-vsock-agent
if [ -x /usr/sbin/sshd ]; then
  "$agent" init -- /bin/sh -c '
mkdir -p /run/sshd && chmod 0755 /run/sshd
set -- /etc/ssh/ssh_host_*_key
if [ ! -e "$1" ] && ! ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key; then
  echo "banger init: ssh-keygen failed: sshd has no host key" >&2
fi
exec /usr/sbin/sshd -D -e' &
else
  "$agent" init &
fi
# The NIC's first bring-up takes a while under emulation: start it now, while
# the agent starts, so that its network duty finds the link up.
ip link set eth0 up >/dev/null 2>&1 &
wait
echo "banger init: the guest agent exited; powering off"
poweroff -f 2>/dev/null || { echo s >/proc/sysrq-trigger; echo o >/proc/sysrq-trigger; }
`

func addGuestPieces(root, agent string) error {
	data, err := os.ReadFile(agent)
	if err != nil {
		return fmt.Errorf("read the guest agent: %w", err)
	}
	files := []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{initrd.RootAgent[1:], data, 0o755},
		{OCIInit[1:], []byte(ociInitScript), 0o755},
	}
	// Everything through os.Root: the tree is the image's, and a link it
	// holds (usr/local -> /root/.ssh) must never lead a write out of it.
	r, err := os.OpenRoot(root)
	if err != nil {
		return err
	}
	defer r.Close()
	for _, f := range files {
		if err := r.MkdirAll(filepath.Dir(f.path), 0o755); err != nil {
			return fmt.Errorf("add %s to the image: %w", f.path, err)
		}
		_ = r.Remove(f.path) // never write through a link the image put there
		if err := r.WriteFile(f.path, f.data, f.mode); err != nil {
			return fmt.Errorf("add %s to the image: %w", f.path, err)
		}
		if err := r.Chmod(f.path, f.mode); err != nil {
			return err
		}
	}
	for _, d := range []string{"proc", "sys", "dev", "run", "tmp"} {
		if err := r.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("add /%s to the image: %w", d, err)
		}
	}
	return nil
}
