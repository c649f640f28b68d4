//go:build e2e

package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"banger/internal/catalog"
	"banger/internal/testutil/bangerenv"
	"banger/internal/testutil/ociregistry"
)

// TestOCIImageBoots pulls container images from a registry served by this
// test process over plain HTTP on loopback and boots them through banger's
// OCI init (/.banger/init): one image without sshd (the agent alone) runs
// commands with vm run, and one with sshd but no host keys (made at first
// boot) answers vm ssh. The first boots the default kernel (no --kernel),
// the second the one named with --kernel.
func TestOCIImageBoots(t *testing.T) {
	w := start(t)
	if r := bangerenv.Need("debugfs", "ldd"); r != "" {
		t.Skip(r)
	}
	if _, err := os.Stat("/usr/bin/ssh-keygen"); err != nil {
		t.Skip("/usr/bin/ssh-keygen is missing (apt-get install openssh-client): the sshd image makes its host keys with it")
	}
	tree := ociTree(t, w.image)

	reg := ociregistry.Start(t)

	// Without sshd: the init runs the agent alone.
	plainRef := reg.Push(t, "e2e/plain:1", ociregistry.DirLayer(t, tree, func(rel string) bool {
		return rel == "usr/sbin/sshd" || rel == "etc/ssh" || strings.HasPrefix(rel, "etc/ssh/")
	}), ociConfig)
	// With sshd and ssh-keygen, and no host keys.
	copyWithLibs(t, "/usr/bin/ssh-keygen", tree)
	sshRef := reg.Push(t, "e2e/sshd:1", ociregistry.DirLayer(t, tree, nil), ociConfig)

	// Without --kernel an OCI image boots the default image's kernel: the
	// catalog kernel of default_image_name. The apt-kernel recipe would
	// download the very package the test kernel was imported from, so it is
	// imported under the catalog name instead (unless an earlier test
	// pulled it), and the pull finds it installed.
	defKernel := defaultImageKernel(t, w)
	if _, code := w.CLI("kernel", "inspect", defKernel); code != 0 {
		w.Must(t, "-q", "kernel", "import", "--name", defKernel, w.deb)
		defer w.CLI("kernel", "rm", defKernel)
	}

	// A kernel that is neither installed nor in the catalog is refused
	// before anything is pulled.
	if out, code := w.CLI("image", "pull", plainRef, "--name", "oci-bad", "--kernel", "no-such-kernel"); code == 0 ||
		!strings.Contains(out, `"no-such-kernel" is neither an installed kernel`) {
		t.Fatalf("image pull --kernel no-such-kernel: exit %d\n%s", code, out)
	}
	if out := w.Must(t, "image", "ls"); strings.Contains(out, "oci-bad") {
		t.Fatalf("a refused pull left an image:\n%s", out)
	}

	// Loopback registries are reached over plain HTTP without --insecure.
	w.Must(t, "-q", "image", "pull", plainRef, "--name", "oci-plain")
	defer w.CLI("image", "rm", "oci-plain")
	w.Must(t, "-q", "image", "pull", sshRef, "--name", "oci-sshd", "--kernel", w.kernel)
	defer w.CLI("image", "rm", "oci-sshd")
	for _, c := range []struct{ name, ref, kernel string }{
		{"oci-plain", plainRef, defKernel},
		{"oci-sshd", sshRef, w.kernel},
	} {
		var im struct {
			OriginKind string `json:"origin_kind"`
			OriginRef  string `json:"origin_ref"`
			Kernel     string `json:"kernel"`
		}
		if err := json.Unmarshal([]byte(w.Must(t, "image", "inspect", c.name, "-o", "json")), &im); err != nil {
			t.Fatal(err)
		}
		if im.OriginKind != "oci" || im.OriginRef != c.ref || im.Kernel != c.kernel {
			t.Fatalf("pulled image %s has origin %q %q and kernel %q, want oci %q and %q", c.name, im.OriginKind, im.OriginRef, im.Kernel, c.ref, c.kernel)
		}
	}

	t.Run("run-uname", func(t *testing.T) {
		stdout, stderr, code := w.CLISplit(nil, "-q", "vm", "run", "oci-plain", "--rm", "--", "uname", "-r")
		if code != 0 || strings.TrimSpace(stdout) != w.release {
			t.Fatalf("vm run oci-plain -- uname -r: exit %d, stdout %q (want %q)\n%s", code, stdout, w.release, stderr)
		}
	})
	t.Run("run-exit-code", func(t *testing.T) {
		_, stderr, code := w.CLISplit(nil, "-q", "vm", "run", "oci-plain", "--rm", "--", "sh", "-c", "exit 7")
		if code != 7 {
			t.Fatalf("vm run oci-plain -- sh -c 'exit 7': exit code %d, want 7\n%s", code, stderr)
		}
	})
	t.Run("ssh", func(t *testing.T) {
		name := "oci-ssh"
		w.Must(t, "-q", "vm", "create", "oci-sshd", "--name", name)
		defer w.CLI("vm", "rm", "-f", name)
		w.Must(t, "-q", "vm", "start", name)
		stdout, stderr, code := w.CLISplit(nil, "vm", "ssh", name, "--", "hostname")
		if code != 0 || strings.TrimSpace(stdout) != name {
			t.Fatalf("vm ssh %s -- hostname: exit %d, %q\n%s", name, code, stdout, stderr)
		}
		// PID 1 is banger's init shell, not the agent, and the host keys
		// were made in this VM.
		out := w.Must(t, "vm", "exec", name, "--", "sh", "-c", "cat /proc/1/cmdline; echo; ls /etc/ssh")
		if !strings.Contains(out, "/.banger/init") || strings.Contains(strings.SplitN(out, "\n", 2)[0], "banger-vsock-agent") {
			t.Fatalf("PID 1 of the guest is not /.banger/init run by the shell:\n%s", out)
		}
		if !strings.Contains(out, "ssh_host_ed25519_key") {
			t.Fatalf("no host keys were made at first boot:\n%s", out)
		}
		w.Must(t, "vm", "rm", "-f", name)
	})
	w.Must(t, "image", "rm", "oci-plain", "oci-sshd")
	assertClean(t, w)
}

// ociTree is the e2e test image's tree without banger's pieces (the agent
// and the init that runs it) and without SSH host keys: what a container
// image of busybox and sshd would hold.
func ociTree(t *testing.T, image string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "rootfs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("debugfs", "-R", "rdump / "+dir, image).CombinedOutput(); err != nil {
		t.Fatalf("debugfs rdump of %s: %v\n%s", image, err, out)
	}
	keys, _ := filepath.Glob(filepath.Join(dir, "etc/ssh/ssh_host_*"))
	for _, p := range append(keys, "lost+found", "sbin/init", "usr/local/bin/banger-vsock-agent") {
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		if err := os.RemoveAll(p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "bin/busybox")); err != nil {
		t.Fatalf("the test image's tree has no busybox: %v", err)
	}
	return dir
}

// copyWithLibs copies the host binary bin into the tree at the same path,
// with every library it links.
func copyWithLibs(t *testing.T, bin, root string) {
	t.Helper()
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		t.Fatalf("ldd %s: %v", bin, err)
	}
	files := []string{bin}
	for _, l := range strings.Split(string(out), "\n") {
		for _, f := range strings.Fields(l) {
			if strings.HasPrefix(f, "/") {
				files = append(files, f)
			}
		}
	}
	for _, f := range files {
		dst := filepath.Join(root, f)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		copyFile(t, f, dst, 0o755)
	}
}

// ociConfig is the config of the images the test pushes.
var ociConfig = v1.Config{Cmd: []string{"/bin/sh"}, Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}}

// defaultImageKernel is the kernel OCI images boot when pulled without
// --kernel: the catalog kernel of the configured default image.
func defaultImageKernel(t *testing.T, w *env) string {
	t.Helper()
	var cfg struct {
		Settings []struct{ Key, Value string }
	}
	if err := json.Unmarshal([]byte(w.Must(t, "config", "show", "-o", "json")), &cfg); err != nil {
		t.Fatal(err)
	}
	name := ""
	for _, s := range cfg.Settings {
		if s.Key == "default_image_name" {
			name = s.Value
		}
	}
	ic, err := catalog.LoadImages()
	if err != nil {
		t.Fatal(err)
	}
	e, ok := ic.Lookup(name)
	if !ok || e.Kernel == "" {
		t.Fatalf("default image %q is not a catalog image with a kernel", name)
	}
	return e.Kernel
}
