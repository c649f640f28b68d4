package imagemgr_test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/childproc"
	"banger/internal/daemon/imagemgr"
	"banger/internal/store"

	"golang.org/x/sys/unix"
)

// The test binary doubles as a daemon importing a kernel (to be SIGKILLed
// mid-import) and as a long-running child of such a daemon.
func TestMain(m *testing.M) {
	switch os.Getenv("IMAGEMGR_TEST_ROLE") {
	case "":
		os.Exit(m.Run())
	case "hang": // a child of a daemon; its arguments name its paths
		select {}
	case "import":
		importingDaemon(os.Args[1], os.Args[2])
	}
}

// importingDaemon imports the kernel package src into stateDir the way
// bangerd does, and starts two children naming its work dir as mkfs.ext4
// would: one the way an older bangerd did (it outlives the daemon), one
// through childproc (it dies with it). It prints their pids and blocks in
// the import until killed.
func importingDaemon(stateDir, src string) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(stateDir, "banger.db"))
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	m := imagemgr.New(st, stateDir, os.Executable)
	go func() {
		var work string
		for work == "" {
			time.Sleep(10 * time.Millisecond)
			ws, _ := filepath.Glob(filepath.Join(stateDir, imagemgr.WorkDirName, "kernel-import-*"))
			if len(ws) == 1 {
				work = ws[0]
			}
		}
		old := hangCmd(filepath.Join(work, "tree"), filepath.Join(work, "rootfs.ext4"))
		old.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := old.Start(); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println("orphan", old.Process.Pid)
		child := hangCmd(filepath.Join(work, "tree"))
		if err := childproc.Start(child); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println("child", child.Process.Pid)
	}()
	_, err = m.ImportKernel(ctx, "k", src, nil)
	fmt.Println("error import returned", err)
	os.Exit(1)
}

func hangCmd(args ...string) *exec.Cmd {
	exe, _ := os.Executable()
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), "IMAGEMGR_TEST_ROLE=hang")
	return cmd
}

func arMember(name string, size int) []byte {
	return []byte(fmt.Sprintf("%-16s%-12d%-6d%-6d%-8s%-10d`\n", name, 0, 0, 0, "100644", size))
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || len(b) < i+3 || b[i+2] != 'Z'
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A daemon SIGKILLed mid-import leaves its partial tree and (when it was an
// older bangerd) a child running on it; the next start's sweep kills the
// child and removes the tree, and leaves the user's data, other files of
// the state dir, and the new daemon's own work in progress alone.
func TestSweepAfterDaemonKilledMidImport(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	state := filepath.Join(base, "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(base, "linux-image.deb")
	if err := unix.Mkfifo(src, 0o600); err != nil {
		t.Skipf("cannot make a fifo to feed the import slowly: %v", err)
	}

	// 1. The first daemon starts importing and is killed mid-extraction.
	exe, _ := os.Executable()
	daemon := exec.Command(exe, state, src)
	daemon.Env = append(os.Environ(), "IMAGEMGR_TEST_ROLE=import")
	out, _ := daemon.StdoutPipe()
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = daemon.Process.Kill(); _ = daemon.Wait() })
	fifo, err := os.OpenFile(src, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fifo.Close()
	const kernelSize = 64 << 20
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	_ = tw.WriteHeader(&tar.Header{Name: "./boot/vmlinuz-6.1.0-test", Mode: 0o644, Size: kernelSize, Typeflag: tar.TypeReg})
	var deb bytes.Buffer
	deb.WriteString("!<arch>\n")
	deb.Write(arMember("debian-binary", 4))
	deb.WriteString("2.0\n")
	deb.Write(arMember("data.tar", tb.Len()+kernelSize+1024))
	deb.Write(tb.Bytes())
	deb.Write(make([]byte, 8<<20)) // 8 of the kernel's 64 MiB, then silence
	if _, err := fifo.Write(deb.Bytes()); err != nil {
		t.Fatal(err)
	}
	pids := map[string]int{}
	sc := bufio.NewScanner(out)
	for len(pids) < 2 && sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 || f[0] == "error" {
			t.Fatalf("daemon said %q", sc.Text())
		}
		pids[f[0]], _ = strconv.Atoi(f[1])
	}
	orphan, child := pids["orphan"], pids["child"]
	t.Cleanup(func() { _ = syscall.Kill(orphan, syscall.SIGKILL); _ = syscall.Kill(child, syscall.SIGKILL) })
	var partial string
	waitFor(t, "the partial kernel in the work dir", func() bool {
		ps, _ := filepath.Glob(filepath.Join(state, "tmp", "kernel-import-*", "*", "src", "boot", "vmlinuz-6.1.0-test"))
		if len(ps) == 1 {
			if fi, err := os.Stat(ps[0]); err == nil && fi.Size() > 0 {
				partial = ps[0]
				return true
			}
		}
		return false
	})
	if err := daemon.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = daemon.Wait()
	waitFor(t, "the childproc child to die with its daemon", func() bool { return !alive(child) })
	if !alive(orphan) {
		t.Fatal("the old-style child died with the daemon; the sweep has nothing to kill")
	}
	leftWork := filepath.Dir(filepath.Dir(filepath.Dir(filepath.Dir(partial))))
	if _, err := os.Stat(leftWork); err != nil {
		t.Fatalf("the killed import left nothing to sweep: %v", err)
	}

	// 2. The next daemon's state: user data, and leftovers of older versions.
	st, err := store.Open(ctx, filepath.Join(state, "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m := imagemgr.New(st, state, os.Executable)
	const id = "0123456789abcdef"
	keep := map[string]string{
		"images/" + id + "/rootfs.ext4":        "the user's image",
		"kernels/fedcba9876543210/vmlinux":     "a kernel",
		"notes.txt":                            "not banger's",
		"images/not-an-id.promote/keep":        "not a promote dir of ours",
		"kernels/.hidden-by-the-user/keep":     "no temp name of ours",
		"vms/" + id + "/.tmp-in-a-vm-dir/keep": "not the sweep's business",
	}
	gone := []string{
		"images/.pull-1234/rootfs.ext4",
		"images/.build-99/rootfs.ext4",
		"kernels/.tmp-" + id + "-77/vmlinux",
		"kernels/." + id + ".tmp-55/out/vmlinux",
		"images/" + id + ".promote/rootfs.ext4",
	}
	for p, data := range keep {
		mustWrite(t, filepath.Join(state, p), data)
	}
	for _, p := range gone {
		mustWrite(t, filepath.Join(state, p), "leftover")
	}
	mustWrite(t, filepath.Join(state, "kernels", id+".lock"), "")
	if err := st.PutImage(ctx, store.Image{ID: id, Name: "mine", Managed: true, RootfsPath: filepath.Join(state, "images", id, "rootfs.ext4"), CreatedAt: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}

	// The new daemon's own pull, in progress, with a child on its work dir.
	started, release := make(chan string), make(chan struct{})
	m.SetBuilders(nil, blockingOCI{started: started, release: release})
	if err := st.PutKernel(ctx, store.Kernel{ID: "kid", Name: "kern", VmlinuxPath: "/v", CreatedAt: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	pullDone := make(chan error, 1)
	go func() {
		_, err := m.PullImage(ctx, "registry.example/app:1", imagemgr.PullOptions{Kernel: "kern"}, nil)
		pullDone <- err
	}()
	dest := <-started
	current := hangCmd(dest)
	if err := childproc.Start(current); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = current.Process.Kill(); _ = current.Wait() })

	// 3. The sweep.
	rep, err := m.SweepLeftovers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(rep.Killed, orphan) || len(rep.Killed) != 1 {
		t.Fatalf("killed %v, want just the orphan %d", rep.Killed, orphan)
	}
	if alive(orphan) {
		t.Fatalf("orphan %d still runs", orphan)
	}
	if !alive(current.Process.Pid) {
		t.Fatal("the sweep killed the current daemon's child")
	}
	if !slices.Contains(rep.Removed, leftWork) {
		t.Fatalf("removed %v, want %s among them", rep.Removed, leftWork)
	}
	for _, p := range append(gone, "kernels/"+id+".lock", strings.TrimPrefix(leftWork, state+"/")) {
		if _, err := os.Lstat(filepath.Join(state, p)); err == nil {
			t.Errorf("leftover %s is still there", p)
		}
	}
	for p, data := range keep {
		if b, err := os.ReadFile(filepath.Join(state, p)); err != nil || string(b) != data {
			t.Errorf("%s: %q, %v; want it untouched", p, b, err)
		}
	}
	if _, err := os.Stat(dest); err != nil {
		t.Fatalf("the sweep removed the current pull's work: %v", err)
	}
	close(release)
	if err := <-pullDone; err != nil {
		t.Fatalf("the pull in progress failed after the sweep: %v", err)
	}
	if _, err := m.Image(ctx, "app-1"); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(filepath.Join(state, "tmp")); len(ents) != 0 {
		t.Fatalf("tmp holds %v after the pull ended", ents)
	}
	// A second sweep finds nothing.
	if rep, err := m.SweepLeftovers(ctx); err != nil || len(rep.Removed)+len(rep.Killed) != 0 {
		t.Fatalf("second sweep = %+v, %v", rep, err)
	}
}

func mustWrite(t *testing.T, p, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// blockingOCI writes a partial rootfs, says where, and waits to be released.
type blockingOCI struct {
	started chan<- string
	release <-chan struct{}
}

func (blockingOCI) Digest(context.Context, string, bool) (string, error) { return "", nil }

func (b blockingOCI) Import(ctx context.Context, ref, dest string, insecure bool, p imagemgr.Progress) (string, int64, error) {
	if err := os.WriteFile(dest, []byte("ext4 in progress"), 0o644); err != nil {
		return "", 0, err
	}
	b.started <- dest
	select {
	case <-b.release:
	case <-ctx.Done():
		return "", 0, ctx.Err()
	}
	return "sha256:" + strings.Repeat("d", 64), 16, nil
}

// The sweep takes only work dirs of its own from tmp/: a file a user put
// there, or a tmp/ symlinked to a shared directory such as /tmp, loses
// nothing that is not banger's.
func TestSweepTakesOnlyWorkDirsFromTmp(t *testing.T) {
	for _, linked := range []bool{false, true} {
		t.Run(map[bool]string{false: "dir", true: "symlink"}[linked], func(t *testing.T) {
			ctx := context.Background()
			state := t.TempDir()
			tmp := filepath.Join(state, "tmp")
			if linked {
				shared := t.TempDir()
				if err := os.Symlink(shared, tmp); err != nil {
					t.Fatal(err)
				}
			}
			keep := []string{"notes.txt", "photos/a.jpg", "build-abc/keep", "oci-pull/keep", "kernel-import-12x/keep"}
			for _, p := range keep {
				mustWrite(t, filepath.Join(tmp, p), "the user's")
			}
			mustWrite(t, filepath.Join(tmp, "oci-pull-123456", "image", "rootfs.ext4"), "leftover")
			st, err := store.Open(ctx, filepath.Join(state, "banger.db"))
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			rep, err := imagemgr.New(st, state, os.Executable).SweepLeftovers(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Removed) != 1 || filepath.Base(rep.Removed[0]) != "oci-pull-123456" {
				t.Fatalf("removed %v, want just the work dir", rep.Removed)
			}
			for _, p := range keep {
				if b, err := os.ReadFile(filepath.Join(tmp, p)); err != nil || string(b) != "the user's" {
					t.Errorf("%s: %q, %v; want it untouched", p, b, err)
				}
			}
		})
	}
}

// An uncommitted kernel whose removal is cut short must not be left as a
// directory without its mark, which would pass for a kernel to keep: the
// next sweep finishes the removal.
func TestSweepFinishesAnUncommittedRemovalCutShort(t *testing.T) {
	ctx := context.Background()
	state := t.TempDir()
	dir := filepath.Join(state, "kernels", "0123456789abcdef")
	mustWrite(t, filepath.Join(dir, ".uncommitted"), "")
	mustWrite(t, filepath.Join(dir, "vmlinux"), "kernel")
	locked := filepath.Join(dir, "vmlinux")
	if out, err := exec.Command("chattr", "+i", locked).CombinedOutput(); err != nil {
		t.Skipf("cannot make a file immutable here (root and ext4 needed): %v: %s", err, out)
	}
	unlock := func() {
		for _, p := range []string{locked, filepath.Join(state, "kernels", ".tmp-0123456789abcdef-uncommitted", "vmlinux")} {
			_ = exec.Command("chattr", "-i", p).Run()
		}
	}
	t.Cleanup(unlock)
	st, err := store.Open(ctx, filepath.Join(state, "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m := imagemgr.New(st, state, os.Executable)
	if _, err := m.SweepLeftovers(ctx); err == nil {
		t.Fatal("the sweep removed an immutable file")
	}
	unlock()
	if _, err := m.SweepLeftovers(ctx); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(filepath.Join(state, "kernels")); len(ents) != 0 {
		t.Fatalf("kernels/ holds %v after the second sweep; want the uncommitted kernel gone", ents)
	}
}
