package golden

import (
	"banger/internal/childproc"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"banger/internal/catalog"
	"banger/internal/daemon/ociimage"
)

// minSubIDs is the size of the subordinate id range mmdebstrap needs to map
// a whole Debian system (ids 0 to 65535) into its user namespace.
const minSubIDs = 65536

// buildUnprivileged builds e without root: mmdebstrap, in its unshare mode,
// bootstraps Debian inside a user namespace that maps the user's
// subordinate ids (newuidmap and newgidmap, from uidmap, set the map up) and
// writes the tree as a tar on its stdout, with the owners, modes and device
// nodes it has in the namespace. The tar goes through ociimage.ImportTar,
// which writes exactly that metadata into the ext4 image (with debugfs, no
// privilege), after Customize has added banger's pieces. The result is the
// image a root build makes.
func buildUnprivileged(ctx context.Context, e catalog.Entry, dir string, o Options, p Progress, suite string, size int64) error {
	u, err := user.Current()
	if err != nil {
		return fmt.Errorf("building image %q without root: who am I: %w", e.Name, err)
	}
	mmdebstrap, err := checkUnprivileged(exec.LookPath, "/etc/subuid", "/etc/subgid", u)
	if err != nil {
		return fmt.Errorf("building image %q without root: %w", e.Name, err)
	}
	mirror := o.Mirror
	if mirror == "" {
		if mirror, err = HostMirror(orDefault(o.SourcesDir, "/etc/apt"), suite); err != nil {
			return err
		}
	}
	params := e.Build.Params
	// --verbose: apt's own lines say how many packages it fetches and installs,
	// which bootLog turns into counts.
	args := []string{"--mode=unshare", "--format=tar", "--verbose", "--variant=" + orDefault(params["variant"], "minbase")}
	if pk := params["packages"]; pk != "" {
		args = append(args, "--include="+pk)
	}
	args = append(args, suite, "-", mirror)

	p.Phase(fmt.Sprintf("mmdebstrap %s from %s (unshare mode, without root)", suite, mirror))
	cmd := exec.CommandContext(ctx, mmdebstrap, args...)
	cmd.Env = append(debootstrapEnv(), "TMPDIR="+dir)
	// Its own process group: apt and dpkg run below it, and all of them go
	// when the build is cancelled or fails.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := childproc.Start(cmd); err != nil {
		return fmt.Errorf("start mmdebstrap: %w", err)
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		tail []string
		log  = newBootLog(p)
	)
	wg.Add(1)
	go func() { // owned: ends when mmdebstrap closes stderr; waited below
		defer wg.Done()
		readLines(stderr, func(line string) {
			mu.Lock()
			tail = append(tail, line)
			if len(tail) > 8 {
				tail = tail[1:]
			}
			mu.Unlock()
			log.line(line)
		})
	}()

	rootfs := filepath.Join(dir, "rootfs.ext4")
	_, ierr := ociimage.ImportTar(ctx, stdout, "mmdebstrap "+suite, rootfs, ociimage.Options{
		MinSize: size,
		WorkDir: dir,
		Extra:   func(tree string) error { return Customize(tree, o.Agent, e.Name) },
	}, p)
	if ierr != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	_, _ = io.Copy(io.Discard, stdout)
	wg.Wait()
	werr := cmd.Wait()
	if werr != nil || ierr != nil {
		_ = os.Remove(rootfs)
		if werr != nil {
			mu.Lock()
			defer mu.Unlock()
			return fmt.Errorf("mmdebstrap %s: %w; last output:\n%s", suite, werr, strings.Join(tail, "\n"))
		}
		return ierr
	}
	return writeManifest(dir, e, "mmdebstrap", suite)
}

// checkUnprivileged finds mmdebstrap and checks what its unshare mode needs,
// saying exactly what to install or configure when something is missing.
func checkUnprivileged(lookPath func(string) (string, error), subuid, subgid string, u *user.User) (string, error) {
	const alt = "or run bangerd as root, or pull a published bundle"
	var missing []string
	mmdebstrap, err := lookPath("mmdebstrap")
	if err != nil {
		missing = append(missing, "mmdebstrap")
	}
	for _, tool := range []string{"newuidmap", "newgidmap"} {
		if _, err := lookPath(tool); err != nil {
			missing = append(missing, "uidmap")
			break
		}
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("building the Debian image without root needs mmdebstrap and the setuid newuidmap/newgidmap: install them (apt-get install %s), %s", strings.Join(missing, " "), alt)
	}
	for _, f := range []string{subuid, subgid} {
		n, err := subIDs(f, u)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("read %s: %w", f, err)
		}
		if n < minSubIDs {
			return "", fmt.Errorf("building the Debian image without root needs %d subordinate ids for %s in %s (it has %d): as root, run usermod --add-subuids 100000-165535 --add-subgids 100000-165535 %s (use a range no other user has), %s",
				minSubIDs, u.Username, f, n, u.Username, alt)
		}
	}
	return mmdebstrap, nil
}

// subIDs counts the subordinate ids file f (/etc/subuid, /etc/subgid) gives
// u, by name or by number.
func subIDs(f string, u *user.User) (int64, error) {
	fh, err := os.Open(f)
	if err != nil {
		return 0, err
	}
	defer fh.Close()
	var n int64
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		parts := strings.Split(strings.TrimSpace(sc.Text()), ":")
		if len(parts) != 3 || (parts[0] != u.Username && parts[0] != u.Uid) {
			continue
		}
		if c, err := strconv.ParseInt(parts[2], 10, 64); err == nil && c > 0 {
			n += c
		}
	}
	return n, sc.Err()
}
