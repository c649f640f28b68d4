//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/testutil"
	"banger/internal/testutil/bangerenv"
	"banger/internal/testutil/debkernel"
)

// env is the isolated world of one test run: its own home, state and
// runtime dirs, and freshly built binaries.
type env struct {
	*bangerenv.Env
	netns   string // when set, every command runs in this network namespace
	asUser  []int  // when set (uid, gid), banger runs as that user
	tunNode string // when set, bound over /dev/net/tun for banger (and the daemon it starts)
	deb     string // Debian kernel package
	image   string // the test image
	kernel  string // kernel name
	release string
}

// newEnv makes an env of banger built into bin, with its home under home
// and runtime dir run, the config file holding cfg; commands run in the
// network namespace ns when it is set.
func newEnv(bin, home, run, cfg, ns string) (*env, error) {
	e, err := bangerenv.New(bin, home, run, cfg)
	if err != nil {
		return nil, err
	}
	w := &env{Env: e, netns: ns}
	e.Wrap = w.wrap
	return w, nil
}

// warm = 0: a warm pool building in the background would change what
// the other tests count (VM directories, QEMU processes, snapshots);
// TestWarmPool turns it on in an env of its own.
const baseConfig = "vmm = \"qemu\"\ndefault_memory = \"512MiB\"\ndefault_disk_size = \"1GiB\"\nwarm = 0\n"

var world *env
var skipReason string

func TestMain(m *testing.M) {
	w, cleanup, reason, err := setup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e setup:", err)
		cleanup()
		os.Exit(1)
	}
	world, skipReason = w, reason
	code := m.Run()
	cleanup()
	os.Exit(code)
}

func setup() (*env, func(), string, error) {
	var dirs []string
	cleanup := func() {
		if world != nil {
			world.StopDaemon()
		}
		for _, d := range dirs {
			os.RemoveAll(d)
		}
	}
	if r := bangerenv.Need("qemu-system-x86_64", "mkfs.ext4", "busybox", "ssh", "ssh-keygen", "go"); r != "" {
		return nil, cleanup, r, nil
	}
	if _, err := os.Stat("/usr/sbin/sshd"); err != nil {
		return nil, cleanup, "openssh-server is not installed (the test image carries the host's sshd)", nil
	}
	deb, skip := debkernel.Deb()
	if skip != "" {
		return nil, cleanup, skip, nil
	}
	root, err := os.MkdirTemp("", "banger-e2e-")
	if err != nil {
		return nil, cleanup, "", err
	}
	dirs = append(dirs, root)
	// The runtime dir holds Unix sockets: keep its path short.
	run, err := os.MkdirTemp("", "bge")
	if err != nil {
		return nil, cleanup, "", err
	}
	dirs = append(dirs, run)
	bin := filepath.Join(root, "bin")
	if err := bangerenv.Build(bin); err != nil {
		return nil, cleanup, "", err
	}
	// QEMU with user-mode networking, whatever this host has: the tests must
	// mean the same everywhere, and must not touch the host's own network
	// (bridged networking is tested in a namespace of its own).
	w, err := newEnv(bin, filepath.Join(root, "home"), run, baseConfig+"network = \"user\"\nhosts_file = \"\"\n", "")
	if err != nil {
		return nil, cleanup, "", err
	}
	w.deb = deb
	world = w
	w.kernel = "e2e-kernel"
	if out, code := w.CLI("kernel", "import", "--name", w.kernel, deb); code != 0 {
		return nil, cleanup, "", fmt.Errorf("kernel import: %s", out)
	}
	var k struct{ Version string }
	out, _ := w.CLI("kernel", "inspect", w.kernel, "-o", "json")
	if err := json.Unmarshal([]byte(out), &k); err != nil {
		return nil, cleanup, "", fmt.Errorf("kernel inspect: %v: %s", err, out)
	}
	w.release = k.Version
	img := filepath.Join(root, "test.ext4")
	w.image = img
	script, _ := filepath.Abs("../scripts/make-test-image.sh")
	if out, err := exec.Command("bash", script, img, filepath.Join(w.Bin, "banger-vsock-agent"), "192").CombinedOutput(); err != nil {
		return nil, cleanup, "", fmt.Errorf("make the test image: %v\n%s", err, out)
	}
	if out, code := w.CLI("image", "register", "e2e", "--rootfs", img, "--kernel", w.kernel); code != 0 {
		return nil, cleanup, "", fmt.Errorf("image register: %s", out)
	}
	return w, cleanup, "", nil
}

// wrap runs banger in the env's network namespace when it has one: with
// its own /dev/net/tun node when tunNode is set, as asUser when that is.
func (w *env) wrap(argv []string) []string {
	if w.netns == "" {
		return argv
	}
	out := []string{"ip", "netns", "exec", w.netns}
	if w.tunNode != "" {
		out = append(out, "unshare", "-m", "--propagation", "private", "sh", "-c",
			`mount --bind "$0" /dev/net/tun && exec "$@"`, w.tunNode)
	}
	if w.asUser != nil {
		out = append(out, "setpriv", fmt.Sprintf("--reuid=%d", w.asUser[0]), fmt.Sprintf("--regid=%d", w.asUser[1]), "--clear-groups")
	}
	return append(out, argv...)
}

func start(t *testing.T) *env {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	return world
}

// vmProcesses lists QEMU processes whose command line mentions dir.
func vmProcesses(dir string) []int {
	var pids []int
	for _, p := range bangerenv.Processes(dir) {
		if strings.Contains(strings.Join(p.Argv, " "), "qemu") {
			pids = append(pids, p.PID)
		}
	}
	return pids
}

// assertClean checks that no VM is left anywhere: no row, no directory, no
// run dir, no QEMU process.
func assertClean(t *testing.T, w *env) {
	t.Helper()
	out := w.Must(t, "vm", "ls", "-o", "json")
	if strings.TrimSpace(out) != "[]" {
		t.Errorf("VMs left in the store: %s", out)
	}
	for _, d := range []string{filepath.Join(w.State, "vms"), filepath.Join(w.Runtime, "banger", "vms")} {
		// A removed VM's directory leaves its name at once and is deleted
		// in the background as .trash-ID: give that a moment, and nothing
		// else.
		var left []string
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			ents, _ := os.ReadDir(d)
			left = left[:0]
			trash := false
			for _, e := range ents {
				left = append(left, e.Name())
				trash = trash || strings.HasPrefix(e.Name(), ".trash-")
			}
			if !trash || time.Now().After(deadline) {
				break
			}
		}
		if len(left) > 0 {
			t.Errorf("%s still holds %v", d, left)
		}
	}
	if pids := vmProcesses(w.Runtime); len(pids) > 0 {
		t.Errorf("QEMU processes left: %v", pids)
	}
}

func TestRunPrintsGuestKernelRelease(t *testing.T) {
	w := start(t)
	stdout, stderr, code := w.CLISplit(nil, "-q", "vm", "run", "e2e", "--rm", "--", "uname", "-r")
	if code != 0 || strings.TrimSpace(stdout) != w.release {
		t.Fatalf("vm run -- uname -r: exit %d, stdout %q (want %q)\n%s", code, stdout, w.release, stderr)
	}
	assertClean(t, w)
}

func TestRunPropagatesExitCode(t *testing.T) {
	w := start(t)
	_, stderr, code := w.CLISplit(nil, "-q", "vm", "run", "e2e", "--rm", "--", "sh", "-c", "exit 7")
	if code != 7 {
		t.Fatalf("exit code %d, want 7\n%s", code, stderr)
	}
	assertClean(t, w)
}

func TestWorkspaceIsCopiedIn(t *testing.T) {
	w := start(t)
	ws := t.TempDir()
	if err := os.MkdirAll(filepath.Join(ws, "sub", "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ws, "sub", "hello.txt"), []byte("from the host\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := w.CLISplit(nil, "-q", "vm", "run", "e2e", "--rm", "--workspace", ws, "--",
		"sh", "-c", "pwd; cat sub/hello.txt; stat -c %a sub/hello.txt; test -d sub/empty && echo empty-dir")
	want := "/workspace\nfrom the host\n640\nempty-dir\n"
	if code != 0 || stdout != want {
		t.Fatalf("workspace: exit %d, stdout %q, want %q\n%s", code, stdout, want, stderr)
	}
	assertClean(t, w)
}

func TestLifecycle(t *testing.T) {
	w := start(t)
	name := "life"
	w.Must(t, "-q", "vm", "create", "e2e", "--name", name)
	out := w.Must(t, "vm", "inspect", name)
	if !strings.Contains(out, "created") {
		t.Fatalf("after create: %s", out)
	}
	w.Must(t, "-q", "vm", "start", name)
	defer w.CLI("vm", "rm", "-f", name)
	out = w.Must(t, "vm", "inspect", name)
	for _, want := range []string{"running", "qemu", "vmm reason"} {
		if !strings.Contains(out, want) {
			t.Fatalf("inspect lacks %q:\n%s", want, out)
		}
	}

	// QEMU runs under its seccomp filter and, under a root bangerd, as a
	// user of its own with no capabilities; the subtests below show the
	// VM still works.
	t.Run("vmm-confined", func(t *testing.T) { checkVMMConfined(t, w) })

	t.Run("ssh", func(t *testing.T) {
		stdout, stderr, code := w.CLISplit(nil, "vm", "ssh", name, "--", "hostname")
		if code != 0 || strings.TrimSpace(stdout) != name {
			t.Fatalf("vm ssh: exit %d, %q\n%s", code, stdout, stderr)
		}
	})

	// The image's agent and the initramfs's /init are the same build here,
	// so the initramfs lends its copy: a read-only bind mount over the
	// image's file.
	t.Run("agent-lent-by-initramfs", func(t *testing.T) {
		out, code := w.CLI("vm", "exec", name, "--", "grep", " /usr/local/bin/banger-vsock-agent ", "/proc/mounts")
		if code != 0 || !strings.Contains(out, " ro") {
			t.Fatalf("no read-only mount of the agent in the guest: exit %d\n%s", code, out)
		}
	})

	t.Run("exec-stdin", func(t *testing.T) {
		stdout, stderr, code := w.CLISplit(strings.NewReader("piped\n"), "vm", "exec", name, "--", "cat")
		if code != 0 || stdout != "piped\n" {
			t.Fatalf("vm exec cat: exit %d, %q\n%s", code, stdout, stderr)
		}
	})

	t.Run("cp-both-ways", func(t *testing.T) { checkCopyBothWays(t, w, name) })

	t.Run("port-forward", func(t *testing.T) { checkPortForward(t, w, name) })

	t.Run("stop-start-keeps-disk", func(t *testing.T) {
		w.Must(t, "vm", "exec", name, "--", "sh", "-c", "echo persisted > /root/marker; sync")
		w.Must(t, "vm", "stop", name)
		if out := w.Must(t, "vm", "inspect", name); !strings.Contains(out, "stopped") {
			t.Fatalf("after stop: %s", out)
		}
		if pids := vmProcesses(w.Runtime); len(pids) > 0 {
			t.Fatalf("QEMU still running after stop: %v", pids)
		}
		w.Must(t, "-q", "vm", "start", name)
		if out := w.Must(t, "vm", "exec", name, "--", "cat", "/root/marker"); out != "persisted\n" {
			t.Fatalf("after restart the marker reads %q", out)
		}
	})

	w.Must(t, "vm", "rm", "-f", name)
	assertClean(t, w)
}

// checkVMMConfined checks that the one QEMU of w runs under its seccomp
// filter and, under a root bangerd, as a VMM user of its own with no
// capabilities (under a user's, as that user).
func checkVMMConfined(t *testing.T, w *env) {
	t.Helper()
	pids := vmProcesses(w.Runtime)
	if len(pids) != 1 {
		t.Fatalf("%d QEMU processes, want 1", len(pids))
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pids[0]))
	if err != nil {
		t.Fatal(err)
	}
	status := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			status[k] = strings.TrimSpace(v)
		}
	}
	if status["Seccomp"] != "2" {
		t.Errorf("QEMU's Seccomp is %q, want 2", status["Seccomp"])
	}
	uids := strings.Fields(status["Uid"])
	if len(uids) != 4 {
		t.Fatalf("Uid line %q", status["Uid"])
	}
	uid, _ := strconv.Atoi(uids[0])
	switch {
	case os.Geteuid() != 0 && uid != os.Geteuid():
		t.Errorf("QEMU of a user's bangerd runs as uid %d, want %d", uid, os.Geteuid())
	case os.Geteuid() == 0 && (uid < 0x7A000000 || uid >= 0x7A010000 || status["CapEff"] != "0000000000000000"):
		t.Errorf("QEMU of a root bangerd runs as uid %d with capabilities %s; want a VMM uid and none", uid, status["CapEff"])
	}
	for _, u := range uids {
		if u != uids[0] {
			t.Errorf("QEMU's uids differ: %q", status["Uid"])
		}
	}
}

// checkCopyBothWays copies a tree with a file and a symlink into the VM
// called name and back, and checks both survive.
func checkCopyBothWays(t *testing.T, w *env, name string) {
	t.Helper()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "f.txt"), []byte("payload"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("f.txt", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	w.Must(t, "vm", "cp", src, name+":/root")
	back := t.TempDir()
	w.Must(t, "vm", "cp", name+":/root/"+filepath.Base(src), back)
	got, err := os.ReadFile(filepath.Join(back, filepath.Base(src), "f.txt"))
	if err != nil || string(got) != "payload" {
		t.Fatalf("round trip: %q, %v", got, err)
	}
	if l, err := os.Readlink(filepath.Join(back, filepath.Base(src), "link")); err != nil || l != "f.txt" {
		t.Fatalf("symlink after round trip: %q, %v", l, err)
	}
}

// checkPortForward serves a page in the VM called name and fetches it
// through `vm port-forward`.
func checkPortForward(t *testing.T, w *env, name string) {
	t.Helper()
	w.Must(t, "vm", "exec", name, "--", "sh", "-c",
		"mkdir -p /www && echo served-by-guest > /www/index.html && httpd -p 8080 -h /www")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := w.Command(context.Background(), "vm", "port-forward", name, fmt.Sprintf("%d:8080", port))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }()
	var body []byte
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/index.html", port))
		if err == nil {
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if strings.TrimSpace(string(body)) != "served-by-guest" {
		t.Fatalf("through the forward: %q\n%s", body, out.String())
	}
}

// TestDaemonKilledDuringStart kills bangerd with SIGKILL while a VM boots,
// restarts it, and checks that the VM's state is true and nothing leaked.
func TestDaemonKilledDuringStart(t *testing.T) {
	w := start(t)
	name := "crash-start"
	w.Must(t, "-q", "vm", "create", "e2e", "--name", name)
	defer w.CLI("vm", "rm", "-f", name)
	op := strings.TrimSpace(w.Must(t, "vm", "start", "--detach", name))
	if !strings.HasPrefix(op, "op-") {
		t.Fatalf("start --detach printed %q", op)
	}
	// Wait until the VMM runs, then kill the daemon under it.
	deadline := time.Now().Add(30 * time.Second)
	for len(vmProcesses(w.Runtime)) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	pid := w.DaemonPID()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	bangerenv.WaitGone(pid)

	// The next command starts a new daemon, which reconciles.
	var v struct{ State, LastError string }
	out := w.Must(t, "vm", "inspect", name, "-o", "json")
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	if v.State != "failed" && v.State != "running" {
		t.Fatalf("after the crash the VM is %q (%s), want failed or running", v.State, v.LastError)
	}
	var o struct{ State, Error string }
	json.Unmarshal([]byte(w.Must(t, "op", "show", op, "-o", "json")), &o)
	if o.State != "failed" && o.State != "succeeded" {
		t.Fatalf("start operation is %q after the crash", o.State)
	}
	if v.State == "failed" && len(vmProcesses(w.Runtime)) > 0 {
		t.Fatalf("VM recorded failed but QEMU still runs: %v", vmProcesses(w.Runtime))
	}
	// It starts cleanly again and is removed without a trace.
	if v.State == "failed" {
		w.Must(t, "-q", "vm", "start", name)
	}
	w.Must(t, "vm", "exec", name, "--", "true")
	w.Must(t, "vm", "rm", "-f", name)
	assertClean(t, w)
}

// TestDaemonKilledWithRunningVM restarts the daemon under a running VM,
// which must be re-adopted and still work.
func TestDaemonKilledWithRunningVM(t *testing.T) {
	w := start(t)
	name := "adopted"
	w.Must(t, "-q", "vm", "run", "e2e", "--name", name, "--", "true")
	defer w.CLI("vm", "rm", "-f", name)
	pids := vmProcesses(w.Runtime)
	pid := w.DaemonPID()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	bangerenv.WaitGone(pid)
	out := w.Must(t, "vm", "exec", name, "--", "echo", "still-here")
	if out != "still-here\n" {
		t.Fatalf("after the daemon restart: %q", out)
	}
	if now := vmProcesses(w.Runtime); len(now) != len(pids) || (len(now) > 0 && now[0] != pids[0]) {
		t.Fatalf("QEMU processes changed across the restart: %v -> %v", pids, now)
	}
	w.Must(t, "vm", "rm", "-f", name)
	assertClean(t, w)
}

// TestDaemonKilledDuringCreate kills bangerd while it copies a root disk
// and checks that no half-made VM is left.
func TestDaemonKilledDuringCreate(t *testing.T) {
	w := start(t)
	op := strings.TrimSpace(w.Must(t, "vm", "create", "--detach", "e2e", "--name", "crash-create", "--disk", "4GiB"))
	pid := w.DaemonPID()
	// Kill as soon as the operation runs.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		out, _ := w.CLI("op", "show", op, "-o", "json")
		if strings.Contains(out, `"state": "running"`) || strings.Contains(out, `"state": "succeeded"`) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	bangerenv.WaitGone(pid)
	out := w.Must(t, "vm", "ls", "-o", "json")
	if strings.Contains(out, "crash-create") {
		// The create finished before the kill: then it must be whole.
		w.Must(t, "-q", "vm", "start", "crash-create")
		w.Must(t, "vm", "rm", "-f", "crash-create")
	}
	assertClean(t, w)
}

// TestWorkSeedBecomesSecondDisk checks that an image's work-seed reaches
// each VM as its own copy on /dev/vdb, and that the seed itself never
// changes.
func TestWorkSeedBecomesSecondDisk(t *testing.T) {
	w := start(t)
	tree := t.TempDir()
	if err := os.WriteFile(filepath.Join(tree, "marker"), []byte("seeded\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	seed := filepath.Join(t.TempDir(), "seed.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-d", tree, seed, "8M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	before, _ := os.ReadFile(seed)
	w.Must(t, "image", "register", "seeded", "--rootfs", w.image, "--kernel", w.kernel, "--work-seed", seed)
	defer w.CLI("image", "rm", "seeded")
	stdout, stderr, code := w.CLISplit(nil, "-q", "vm", "run", "seeded", "--rm", "--",
		"sh", "-c", "mkdir -p /mnt && mount /dev/vdb /mnt && cat /mnt/marker && echo changed > /mnt/marker && umount /mnt")
	if code != 0 || stdout != "seeded\n" {
		t.Fatalf("work disk: exit %d, %q\n%s", code, stdout, stderr)
	}
	if after, _ := os.ReadFile(seed); !bytes.Equal(before, after) {
		t.Fatal("the VM wrote to the image's work-seed")
	}
	assertClean(t, w)
}

// TestDefaultImageBuildsAndBoots is what `make run` does on a fresh host:
// `vm run` with no image pulls debian-bookworm, which has no published
// bundle, so banger builds it with debootstrap from the host's Debian
// mirror and pulls its kernel with apt; the VM boots systemd with the
// agent and sshd enabled, and `vm ssh` logs in.
func TestDefaultImageBuildsAndBoots(t *testing.T) {
	w := start(t)
	testutil.NeedRoot(t, "build debian-bookworm with debootstrap")
	if r := bangerenv.Need("debootstrap", "apt-get"); r != "" {
		t.Skip(r)
	}
	// The agent answers before systemd has started its units (the
	// initramfs starts it early): the command waits for systemd to answer
	// before it asks about the agent's unit.
	stdout, stderr, code := w.CLISplit(nil, "vm", "run", "--rm", "--name", "golden", "--",
		"sh", "-c", "echo early=$(cat /run/banger/early-agent); i=0; until systemctl is-active -q banger-agent.service || [ $i -ge 300 ]; do i=$((i+1)); sleep 0.2; done; "+
			"systemctl is-active banger-agent.service; test -x /usr/sbin/sshd && echo has-sshd; . /etc/os-release; echo $VERSION_CODENAME")
	if code != 0 {
		t.Fatalf("vm run (default image): exit %d\n%s\n%s", code, stdout, stderr)
	}
	if !regexp.MustCompile(`early=[0-9]+ [0-9]+\n`).MatchString(stdout) {
		t.Errorf("the initramfs did not start the agent before systemd (no pid and start time in /run/banger/early-agent):\n%s", stdout)
	}
	for _, want := range []string{"active", "has-sshd", "bookworm"} {
		if !strings.Contains(stdout, want) {
			t.Fatalf("guest output lacks %q:\n%s", want, stdout)
		}
	}
	if !strings.Contains(stderr, "building locally") {
		t.Errorf("the pull did not say it built locally:\n%s", stderr)
	}
	var im struct {
		OriginRef string `json:"origin_ref"`
		Kernel    string
	}
	_ = json.Unmarshal([]byte(w.Must(t, "image", "inspect", "debian-bookworm", "-o", "json")), &im)
	if im.OriginRef != "build:debootstrap" || im.Kernel != "debian-6.1-amd64" {
		t.Fatalf("image = %+v", im)
	}
	w.Must(t, "-q", "vm", "run", "--name", "golden-ssh", "--", "true")
	defer w.CLI("vm", "rm", "-f", "golden-ssh")
	out, errOut, code := w.CLISplit(nil, "vm", "ssh", "golden-ssh", "--", "id", "-un")
	if code != 0 || strings.TrimSpace(out) != "root" {
		t.Fatalf("vm ssh into the golden image: exit %d, %q\n%s", code, out, errOut)
	}
	// Each VM of the image makes its own host keys.
	w.Must(t, "-q", "vm", "run", "--name", "golden-ssh2", "--", "true")
	defer w.CLI("vm", "rm", "-f", "golden-ssh2")
	if out, errOut, code := w.CLISplit(nil, "vm", "ssh", "golden-ssh2", "--", "true"); code != 0 {
		t.Fatalf("vm ssh golden-ssh2: exit %d %s%s", code, out, errOut)
	}
	hostKey := func(name string) string {
		var v struct {
			KnownHosts string `json:"known_hosts"`
		}
		_ = json.Unmarshal([]byte(w.Must(t, "vm", "inspect", name, "-o", "json")), &v)
		data, err := os.ReadFile(v.KnownHosts)
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, l := range strings.Split(string(data), "\n") {
			if f := strings.Fields(l); len(f) >= 3 {
				keys = append(keys, f[2])
			}
		}
		return strings.Join(keys, ",")
	}
	if a, b := hostKey("golden-ssh"), hostKey("golden-ssh2"); a == "" || a == b {
		t.Fatalf("two VMs of the golden image share SSH host keys (%q)", a)
	}
	w.Must(t, "vm", "rm", "-f", "golden-ssh", "golden-ssh2")
	assertClean(t, w)
}
