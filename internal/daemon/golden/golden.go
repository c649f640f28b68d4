package golden

import (
	"banger/internal/childproc"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"

	guestfiles "banger/images/guest"
	"banger/internal/atomicfile"
	"banger/internal/catalog"
	"banger/internal/config"
	"banger/internal/guest/initrd"
	"banger/internal/progress"
)

// Progress is how the build reports; *opstate.Progress satisfies it.
type Progress = progress.Reporter

// Options of a build.
type Options struct {
	// Agent is the static banger-vsock-agent binary installed in the image.
	Agent string
	// Mirror overrides the Debian mirror found in the host's apt sources.
	Mirror string
	// SourcesDir is where apt sources are read (default /etc/apt).
	SourcesDir string
}

// Build runs the recipe of e (kind "debootstrap") and writes dir/rootfs.ext4
// and dir/manifest.json. The tree is built in a temporary directory inside
// dir and removed whatever happens.
func Build(ctx context.Context, e catalog.Entry, dir string, o Options, p Progress) error {
	p = progress.OrNop(p)
	if e.Build == nil || e.Build.Kind != "debootstrap" {
		return fmt.Errorf("image %q has no debootstrap recipe", e.Name)
	}
	params := e.Build.Params
	suite := params["suite"]
	if suite == "" {
		return fmt.Errorf("image %q: the recipe names no suite", e.Name)
	}
	size, err := config.ParseSize(orDefault(params["size"], "4GiB"))
	if err != nil {
		return fmt.Errorf("image %q: recipe size: %w", e.Name, err)
	}
	if o.Agent == "" {
		return errors.New("no guest agent binary to install")
	}
	if os.Geteuid() != 0 {
		return buildUnprivileged(ctx, e, dir, o, p, suite, int64(size))
	}
	debootstrap, err := exec.LookPath("debootstrap")
	if err != nil {
		return errors.New("debootstrap is not installed: install it (apt-get install debootstrap)")
	}
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		return errors.New("mkfs.ext4 is not installed: install e2fsprogs")
	}
	mirror := o.Mirror
	if mirror == "" {
		if mirror, err = HostMirror(orDefault(o.SourcesDir, "/etc/apt"), suite); err != nil {
			return err
		}
	}
	tree := filepath.Join(dir, "tree")
	defer os.RemoveAll(tree)

	args := []string{"--variant=" + orDefault(params["variant"], "minbase")}
	if pk := params["packages"]; pk != "" {
		args = append(args, "--include="+pk)
	}
	args = append(args, suite, tree, mirror)
	p.Phase(fmt.Sprintf("debootstrap %s from %s", suite, mirror))
	if err := runLogged(ctx, p, debootstrapEnv(), debootstrap, args...); err != nil {
		return fmt.Errorf("debootstrap %s: %w", suite, err)
	}
	p.Phase("installing banger's guest pieces")
	if err := Customize(tree, o.Agent, e.Name); err != nil {
		return err
	}
	p.Phase("making the ext4 image")
	rootfs := filepath.Join(dir, "rootfs.ext4")
	mk := exec.CommandContext(ctx, mkfs, "-q", "-F", "-L", "rootfs", "-E", "root_owner=0:0", "-d", tree,
		rootfs, fmt.Sprintf("%dK", int64(size)/1024))
	if out, err := childproc.CombinedOutput(mk); err != nil {
		return fmt.Errorf("mkfs.ext4: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return writeManifest(dir, e, "debootstrap", suite)
}

func writeManifest(dir string, e catalog.Entry, by, suite string) error {
	manifest := fmt.Sprintf("{\n  \"name\": %q,\n  \"kernel\": %q,\n  \"built_by\": %q,\n  \"suite\": %q,\n  \"guest_pieces\": %d\n}\n",
		e.Name, e.Kernel, by, suite, GuestPiecesVersion)
	return os.WriteFile(filepath.Join(dir, "manifest.json"), []byte(manifest), 0o644)
}

// debootstrapEnv passes apt's configured HTTP proxy on, since debootstrap
// does not read apt's configuration itself.
func debootstrapEnv() []string {
	env := os.Environ()
	ac := exec.Command("apt-config", "shell", "PROXY", "Acquire::http::Proxy")
	out, err := childproc.Output(ac)
	if err == nil {
		if v, ok := strings.CutPrefix(strings.TrimSpace(string(out)), "PROXY="); ok {
			v = strings.Trim(v, "'\"")
			if v != "" && os.Getenv("http_proxy") == "" {
				env = append(env, "http_proxy="+v)
			}
		}
	}
	return env
}

// runLogged runs debootstrap and turns its output into phases with counts
// (bootLog), keeping the last lines for the error.
func runLogged(ctx context.Context, p Progress, env []string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := childproc.Start(cmd); err != nil {
		return err
	}
	var tail []string
	log := newBootLog(p)
	done := make(chan struct{})
	go func() { // owned: ends when the pipe closes below; waited on done
		defer close(done)
		readLines(pr, func(line string) {
			tail = append(tail, line)
			if len(tail) > 8 {
				tail = tail[1:]
			}
			log.line(line)
		})
	}()
	err := cmd.Wait()
	pw.Close()
	<-done
	if err != nil {
		return fmt.Errorf("%w; last output:\n%s", err, strings.Join(tail, "\n"))
	}
	return nil
}

// Customize turns a debootstrapped tree into a banger guest: the agent and
// its units installed and enabled, sshd taking root logins by key only, an
// fstab for /dev/vda, and a hostname. Everything goes through an os.Root
// of the tree: the tree is made of the image's packages, and a link they
// put there (etc -> /etc) must never lead a read or a write out of it.
func Customize(tree, agent, name string) error {
	r, err := os.OpenRoot(tree)
	if err != nil {
		return err
	}
	defer r.Close()
	steps := []struct {
		what string
		do   func() error
	}{
		{"install the agent", func() error {
			return copyFile(r, agent, initrd.RootAgent[1:], 0o755)
		}},
		{"install the units", func() error { return installUnits(r) }},
		{"mask what a VM's boot does without", func() error { return maskBootPath(r) }},
		{"keep /tmp at boot", func() error { return writeFile(r, "etc/tmpfiles.d/tmp.conf", tmpConf, 0o644) }},
		{"configure sshd", func() error {
			return writeFile(r, "etc/ssh/sshd_config.d/banger.conf",
				"# Written by banger: root logs in with the key banger installs at boot.\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"+sshdHostKeyLine, 0o644)
		}},
		{"write fstab", func() error {
			return writeFile(r, "etc/fstab", "/dev/vda / ext4 rw,relatime 0 1\n", 0o644)
		}},
		{"write hostname", func() error { return writeFile(r, "etc/hostname", name+"\n", 0o644) }},
		{"lock root's password", func() error { return lockRoot(r, "etc/shadow") }},
		{"make host keys per VM", func() error { return perVMHostKeys(r) }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return fmt.Errorf("%s: %w", s.what, err)
		}
	}
	return nil
}

// perVMHostKeys removes the SSH host keys made while the image was built,
// which every VM of the image would otherwise share, and has ssh.service
// make a fresh one on each VM's first boot (sshHostKeyDropIn).
func perVMHostKeys(r *os.Root) error {
	ents, err := fs.ReadDir(r.FS(), "etc/ssh")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "ssh_host_") {
			if err := r.Remove("etc/ssh/" + e.Name()); err != nil {
				return err
			}
		}
	}
	return writeFile(r, "etc/systemd/system/ssh.service.d/banger-host-keys.conf", sshHostKeyDropIn, 0o644)
}

func installUnits(r *os.Root) error {
	const sysd = "etc/systemd/system"
	for unit, target := range guestfiles.UnitNames {
		data, err := fs.ReadFile(guestfiles.Units, unit)
		if err != nil {
			return err
		}
		if err := writeFile(r, path.Join(sysd, unit), string(data), 0o644); err != nil {
			return err
		}
		wants := path.Join(sysd, target+".wants")
		if err := r.MkdirAll(wants, 0o755); err != nil {
			return err
		}
		link := path.Join(wants, unit)
		_ = r.Remove(link)
		if err := r.Symlink("/etc/systemd/system/"+unit, link); err != nil {
			return err
		}
	}
	return nil
}

// lockRoot makes root's password field "*" so only keys can log in.
func lockRoot(r *os.Root, shadow string) error {
	data, err := r.ReadFile(shadow)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	lines := strings.Split(string(data), "\n")
	for i, l := range lines {
		if f := strings.SplitN(l, ":", 3); len(f) == 3 && f[0] == "root" {
			lines[i] = "root:*:" + f[2]
		}
	}
	return writeFile(r, shadow, strings.Join(lines, "\n"), 0o640)
}

// copyFile copies the host file src to dst in the tree.
func copyFile(r *os.Root, src, dst string, mode os.FileMode) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return writeFile(r, dst, string(data), mode)
}

// writeFile puts data at name in the image tree, making its directory. It
// is not flushed: the tree is packed into the image by mkfs later, and
// thrown away if the build fails.
func writeFile(r *os.Root, name, data string, mode os.FileMode) error {
	if err := r.MkdirAll(path.Dir(name), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFileIn(r, name, []byte(data), atomicfile.Mode(mode), atomicfile.NoSync())
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
