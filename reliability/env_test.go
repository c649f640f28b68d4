//go:build reliability

package reliability

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"banger/internal/rpc"
	"banger/internal/testutil/bangerenv"
	"banger/internal/testutil/debkernel"
)

// env is one isolated banger installation: its own home, state and runtime
// dirs, sharing the binaries built once for the suite.
type env struct {
	*bangerenv.Env
}

var (
	binDir     string
	kernelDeb  string
	skipReason string
	shared     *env   // the suite's main env: a kernel "k" and an image "img"
	smallImage string // a small ext4 root filesystem
)

const baseConfig = "vmm = \"qemu\"\nnetwork = \"user\"\nhosts_file = \"\"\ncow = \"copy\"\ndefault_memory = \"256MiB\"\ndefault_disk_size = \"512MiB\"\ndefault_image_name = \"img\"\nwarm = 0\n"

func TestMain(m *testing.M) {
	root, err := os.MkdirTemp("", "banger-rel-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := 1
	func() {
		defer func() {
			if shared != nil {
				shared.StopDaemon()
			}
			for _, e := range allEnvs {
				e.StopDaemon()
				os.RemoveAll(e.Runtime)
			}
			os.RemoveAll(root)
		}()
		if skipReason, err = setup(root); err != nil {
			fmt.Fprintln(os.Stderr, "reliability setup:", err)
			return
		}
		code = m.Run()
		writeResults()
	}()
	os.Exit(code)
}

func setup(root string) (string, error) {
	if r := bangerenv.Need("go", "mkfs.ext4"); r != "" {
		return r, nil
	}
	deb, skip := debkernel.Deb()
	if skip != "" {
		return skip, nil
	}
	kernelDeb = deb
	binDir = filepath.Join(root, "bin")
	if err := bangerenv.Build(binDir); err != nil {
		return "", err
	}
	// A small but real root filesystem: registering it must pass every
	// check banger makes of a root disk.
	tree := filepath.Join(root, "tree")
	for _, d := range []string{"etc", "bin", "root"} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(filepath.Join(tree, "etc", "hostname"), []byte("rel\n"), 0o644); err != nil {
		return "", err
	}
	smallImage = filepath.Join(root, "small.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", tree, smallImage, "16M").CombinedOutput(); err != nil {
		return "", fmt.Errorf("mkfs.ext4: %v\n%s", err, out)
	}
	e, err := newEnv(filepath.Join(root, "main"))
	if err != nil {
		return "", err
	}
	shared = e
	if out, code := e.CLI("-q", "kernel", "import", "--name", "k", kernelDeb); code != 0 {
		return "", fmt.Errorf("kernel import: %s", out)
	}
	if out, code := e.CLI("image", "register", "img", "--rootfs", smallImage, "--kernel", "k"); code != 0 {
		return "", fmt.Errorf("image register: %s", out)
	}
	return "", nil
}

var (
	envMu   sync.Mutex
	allEnvs []*env
)

// newEnv makes an env under dir (the runtime dir gets a short path of its
// own: it holds Unix sockets; TestMain removes it with the env).
func newEnv(dir string) (*env, error) {
	run, err := os.MkdirTemp("", "bgr")
	if err != nil {
		return nil, err
	}
	be, err := bangerenv.New(binDir, filepath.Join(dir, "home"), run, baseConfig)
	if err != nil {
		os.RemoveAll(run)
		return nil, err
	}
	be.ExtraEnv = []string{"BANGER_AGENT_BIN=" + filepath.Join(binDir, "banger-vsock-agent")}
	be.Timeout = 5 * time.Minute
	e := &env{be}
	envMu.Lock()
	allEnvs = append(allEnvs, e)
	envMu.Unlock()
	return e, nil
}

func (e *env) socket() string { return filepath.Join(e.Runtime, "banger", "bangerd.sock") }

// kill SIGKILLs bangerd and waits until it is gone.
func (e *env) kill(t *testing.T) {
	t.Helper()
	pid := e.DaemonPID()
	if pid <= 0 {
		t.Fatal("no bangerd pid in the lock file")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill bangerd %d: %v", pid, err)
	}
	bangerenv.WaitGone(pid)
}

// op returns the operation's record.
func (e *env) op(t *testing.T, id string) rpc.Operation {
	t.Helper()
	var o rpc.Operation
	out, stderr, code := e.CLISplit(nil, "op", "show", id, "-o", "json")
	if code != 0 {
		t.Fatalf("op show %s: exit %d: %s\ndaemon log:\n%s", id, code, stderr, e.logTail())
	}
	if err := json.Unmarshal([]byte(out), &o); err != nil {
		t.Fatalf("op show %s: %v: %s", id, err, out)
	}
	return o
}

// logTail is the end of the daemon's log, for failure messages.
func (e *env) logTail() string {
	b, _ := os.ReadFile(filepath.Join(e.State, "bangerd.log"))
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return string(b)
}

// watch follows an operation over the API and calls fn on every change
// until fn returns false or the operation ends.
func (e *env) watch(ctx context.Context, id string, fn func(rpc.Operation) bool) error {
	c := rpc.NewClient(e.socket())
	defer c.Close()
	return c.Stream(ctx, "GET", "/v1/ops/"+id+"/watch", nil, func(raw json.RawMessage) error {
		var o rpc.Operation
		if err := json.Unmarshal(raw, &o); err != nil {
			return err
		}
		if !fn(o) || o.Terminal() {
			return io.EOF
		}
		return nil
	})
}

// tree lists every path under dir (relative), with the bytes its regular
// files use, leaving out the store, its backups, the log and the lock.
func tree(dir string) (map[string]bool, int64) {
	paths := map[string]bool{}
	var used int64
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == dir {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		base := filepath.Base(rel)
		if strings.HasPrefix(base, "banger.db") || base == "bangerd.log" || base == "bangerd.lock" || base == "state-id" {
			return nil
		}
		switch rel {
		case "images", "kernels", "vms", "tmp", "ssh", "run":
			return nil // banger's own folders, made on first use
		}
		paths[rel] = true
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && fi.Mode().IsRegular() {
			used += st.Blocks * 512
		}
		return nil
	})
	return paths, used
}

// newPaths are the paths of after that before lacks, top-most only.
func newPaths(before, after map[string]bool) []string {
	var out []string
	for p := range after {
		if before[p] {
			continue
		}
		if parent := filepath.Dir(p); parent != "." && !before[parent] && after[parent] {
			continue
		}
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// strays lists the processes other than bangerd whose command line or
// working directory names dir.
func strays(dir string) []string {
	var out []string
	for _, p := range bangerenv.Processes(dir) {
		if filepath.Base(p.Argv[0]) != "bangerd" {
			out = append(out, p.String())
		}
	}
	return out
}

func start(t *testing.T) *env {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	return shared
}
