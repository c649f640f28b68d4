package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"banger/internal/catalog"
	"banger/internal/daemon/golden"
	"banger/internal/daemon/imagemgr"
	"banger/internal/daemon/ociimage"
	"banger/internal/imagecat"
	"banger/internal/kernelcat"
)

// wireImages gives the image manager its catalogs, local builders and OCI
// importer.
func wireImages(m *imagemgr.Manager, baseURL string) error {
	ic, err := imagecat.Load()
	if err != nil {
		return fmt.Errorf("load the image catalog: %w", err)
	}
	kc, err := kernelcat.Load()
	if err != nil {
		return fmt.Errorf("load the kernel catalog: %w", err)
	}
	m.SetCatalogs(imagemgr.Catalogs{Images: ic, Kernels: kc, BaseURL: baseURL})
	m.SetBuilders(map[string]imagemgr.Builder{
		"debootstrap": func(ctx context.Context, e catalog.Entry, dir string, p imagemgr.Progress) error {
			agent, err := agentBinary()
			if err != nil {
				return err
			}
			return golden.Build(ctx, e, dir, golden.Options{Agent: agent}, p)
		},
	}, ociImporter{})
	return nil
}

// ociImporter adapts ociimage to the image manager, adding banger's guest
// pieces to every imported tree.
type ociImporter struct{}

func (ociImporter) Digest(ctx context.Context, ref string, insecure bool) (string, error) {
	return ociimage.Digest(ctx, ref, ociimage.Options{Insecure: insecure})
}

func (ociImporter) Import(ctx context.Context, ref, dest string, insecure bool, p imagemgr.Progress) (string, int64, error) {
	agent, err := agentBinary()
	if err != nil {
		return "", 0, err
	}
	res, err := ociimage.Import(ctx, ref, dest, ociimage.Options{
		Insecure: insecure,
		Extra:    func(root string) error { return addGuestPieces(root, agent) },
	}, p)
	if err != nil {
		return "", 0, err
	}
	return res.Digest, res.Size, nil
}

// OCIInit is where banger's init for OCI images lives inside the guest.
// Such images rarely carry an init system, so VMs of OCI images boot with
// init= pointing here.
const OCIInit = "/.banger/init"

// ociInitScript mounts the basics, applies the VM's settings, starts sshd
// when the image has one, and hands PID 1 to the agent.
const ociInitScript = `#!/bin/sh
# Written by banger: the init of VMs made from OCI images.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc 2>/dev/null
mount -t sysfs sysfs /sys 2>/dev/null
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts 2>/dev/null
mount -t tmpfs tmpfs /run 2>/dev/null
mount -o remount,rw / 2>/dev/null
/usr/local/bin/banger-vsock-agent boot
if [ -x /usr/sbin/sshd ]; then
  mkdir -p /run/sshd && chmod 0755 /run/sshd
  [ -e /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -A >/dev/null 2>&1
  /usr/sbin/sshd -e
fi
exec /usr/local/bin/banger-vsock-agent serve
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
		{"usr/local/bin/banger-vsock-agent", data, 0o755},
		{OCIInit[1:], []byte(ociInitScript), 0o755},
	}
	for _, f := range files {
		p := filepath.Join(root, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		_ = os.Remove(p) // never write through a link the image put there
		if err := os.WriteFile(p, f.data, f.mode); err != nil {
			return err
		}
		if err := os.Chmod(p, f.mode); err != nil {
			return err
		}
	}
	for _, d := range []string{"proc", "sys", "dev", "run", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	return nil
}
