package workspace_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"banger/internal/daemon/workspace"
	"banger/internal/testutil"
)

// sparseImage writes a 64 MiB file with three small data extents.
func sparseImage(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "rootfs.ext4")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	}
	for i, off := range []int64{0, 10 << 20, 63 << 20} {
		if _, err := f.WriteAt(bytes.Repeat([]byte{byte('a' + i)}, 256<<10), off); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func blocks(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Blocks
}

func sameContent(t *testing.T, a, b string) {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(x, y) {
		t.Fatalf("%s and %s differ", a, b)
	}
}

func TestSparseCopyKeepsHoles(t *testing.T) {
	dir := t.TempDir()
	src := sparseImage(t, dir)
	dst := filepath.Join(dir, "vm.ext4")
	used, err := workspace.CloneDisk(context.Background(), src, dst, workspace.Copy, workspace.CloneOptions{})
	if err != nil || used != workspace.Copy {
		t.Fatalf("CloneDisk = %q, %v", used, err)
	}
	sameContent(t, src, dst)
	// 768 KiB of data: the copy must not allocate the 64 MiB.
	if b := blocks(t, dst); b*512 > 4<<20 {
		t.Fatalf("copy allocated %d KiB, want it sparse", b/2)
	}
}

func TestAutoFallsBackToCopyWithoutReflink(t *testing.T) {
	dir := t.TempDir()
	src := sparseImage(t, dir)
	dst := filepath.Join(dir, "vm.ext4")
	_, err := workspace.CloneDisk(context.Background(), src, dst, workspace.Reflink, workspace.CloneOptions{})
	if err == nil {
		t.Skip("this filesystem supports reflink; the fallback cannot be seen here")
	}
	if !errors.Is(err, workspace.ErrReflinkUnsupported) {
		t.Fatalf("reflink error = %v, want ErrReflinkUnsupported", err)
	}
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("failed reflink left %s", dst)
	}
	used, err := workspace.CloneDisk(context.Background(), src, dst, workspace.Auto, workspace.CloneOptions{})
	if err != nil || used != workspace.Copy {
		t.Fatalf("auto = %q, %v; want copy", used, err)
	}
	sameContent(t, src, dst)
}

func TestGrowAndRefuseExisting(t *testing.T) {
	dir := t.TempDir()
	src := sparseImage(t, dir)
	dst := filepath.Join(dir, "vm.ext4")
	if _, err := workspace.CloneDisk(context.Background(), src, dst, workspace.Auto, workspace.CloneOptions{Size: 1 << 30}); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(dst)
	if fi.Size() != 1<<30 {
		t.Fatalf("size %d, want 1 GiB", fi.Size())
	}
	if _, err := workspace.CloneDisk(context.Background(), src, dst, workspace.Copy, workspace.CloneOptions{}); err == nil {
		t.Fatal("clone over an existing disk succeeded")
	}
	if fi2, _ := os.Stat(dst); fi2.Size() != 1<<30 {
		t.Fatal("existing disk was touched")
	}
}

func TestCancelledCopyLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	src := sparseImage(t, dir)
	dst := filepath.Join(dir, "vm.ext4")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := workspace.CloneDisk(ctx, src, dst, workspace.Copy, workspace.CloneOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("cancelled copy left its file")
	}
}

func TestUnknownStrategy(t *testing.T) {
	dir := t.TempDir()
	src := sparseImage(t, dir)
	if _, err := workspace.CloneDisk(context.Background(), src, filepath.Join(dir, "x"), "magic", workspace.CloneOptions{}); err == nil {
		t.Fatal("unknown strategy accepted")
	}
}

// TestReflinkOnBtrfs clones on a real btrfs filesystem in a loop-mounted
// image, where auto must pick reflink and share the blocks.
func TestReflinkOnBtrfs(t *testing.T) {
	testutil.NeedRoot(t, "mount a btrfs image")
	mkfs, err := exec.LookPath("mkfs.btrfs")
	if err != nil {
		t.Skip("mkfs.btrfs is not installed (apt-get install btrfs-progs)")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "btrfs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 256<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.btrfs: %v\n%s", err, out)
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot loop-mount btrfs here: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", mnt).Run() })
	src := sparseImage(t, mnt)
	dst := filepath.Join(mnt, "vm.ext4")
	used, err := workspace.CloneDisk(context.Background(), src, dst, workspace.Auto, workspace.CloneOptions{})
	if err != nil || used != workspace.Reflink {
		t.Fatalf("auto on btrfs = %q, %v; want reflink", used, err)
	}
	sameContent(t, src, dst)
}

func TestDirs(t *testing.T) {
	m := workspace.New(t.TempDir())
	dir, err := m.Create("abc123")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("dir %s: %v %v", dir, fi, err)
	}
	if _, err := m.Create("abc123"); err == nil {
		t.Fatal("second Create of the same id succeeded")
	}
	for _, bad := range []string{"", "../x", "a/b", ".."} {
		if _, err := m.Create(bad); err == nil {
			t.Errorf("Create(%q) succeeded", bad)
		}
		if err := m.Remove(bad); err == nil {
			t.Errorf("Remove(%q) succeeded", bad)
		}
	}
	ids, _ := m.List()
	if len(ids) != 1 || ids[0] != "abc123" {
		t.Fatalf("List = %v", ids)
	}
	if err := os.WriteFile(filepath.Join(dir, "root.ext4"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := m.Remove("abc123"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("Remove left the dir")
	}
	if err := m.Remove("abc123"); err != nil {
		t.Fatalf("second Remove = %v", err)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(dir)); len(ents) != 0 {
		t.Fatalf("after Close, the VMs dir still holds %v", ents)
	}
	// After Close, a removal deletes in place.
	dir, err = m.Create("abc124")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Remove("abc124"); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(dir)); len(ents) != 0 {
		t.Fatalf("a removal after Close left %v", ents)
	}
}

// TestRemoveTrashIsSweptAndNotListed: the trash a crash leaves in the middle
// of a removal is no VM (List skips it), Sweep deletes it, and a VM of the
// same id can be made and removed again meanwhile.
func TestRemoveTrashIsSweptAndNotListed(t *testing.T) {
	state := t.TempDir()
	m := workspace.New(state)
	trash := filepath.Join(state, "vms", ".trash-dead01")
	if err := os.MkdirAll(filepath.Join(trash, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(trash, "sub", "root.ext4"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if ids, _ := m.List(); len(ids) != 0 {
		t.Fatalf("List = %v, want no VM", ids)
	}
	// A removal whose trash name is taken still removes the directory.
	dir, err := m.Create("dead01")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "root.ext4"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := m.Remove("dead01"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("Remove left the dir when the trash name was taken")
	}
	if err := m.Sweep(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(filepath.Join(state, "vms")); len(ents) != 0 {
		t.Fatalf("after Sweep, the VMs dir still holds %v", ents)
	}
}

// TestCloneWithoutSyncCopiesTheSame: NoSync changes when the data reaches
// the disk, not what the copy holds.
func TestCloneWithoutSyncCopiesTheSame(t *testing.T) {
	dir := t.TempDir()
	src := sparseImage(t, dir)
	dst := filepath.Join(dir, "vm.ext4")
	used, err := workspace.CloneDisk(context.Background(), src, dst, workspace.Copy, workspace.CloneOptions{NoSync: true, Size: 1 << 30})
	if err != nil || used != workspace.Copy {
		t.Fatalf("CloneDisk = %q, %v", used, err)
	}
	if fi, err := os.Stat(dst); err != nil || fi.Size() != 1<<30 {
		t.Fatalf("size %v, %v; want 1 GiB", fi, err)
	}
	if err := os.Truncate(dst, mustSize(t, src)); err != nil {
		t.Fatal(err)
	}
	sameContent(t, src, dst)
}

func mustSize(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func TestMoveAsideKeepsEverything(t *testing.T) {
	state := t.TempDir()
	m := workspace.New(state)
	dir, err := m.Create("abc123")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "root.ext4"), []byte("guest data"), 0o600); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 3, 1, 2, 3, 0, time.UTC)
	to, err := m.MoveAside("abc123", now)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(state, "vms", ".orphaned-abc123-20261203T010203Z"); to != want {
		t.Errorf("moved to %s, want %s", to, want)
	}
	if b, err := os.ReadFile(filepath.Join(to, "root.ext4")); err != nil || string(b) != "guest data" {
		t.Errorf("moved disk: %q, %v", b, err)
	}
	if ids, _ := m.List(); len(ids) != 0 {
		t.Errorf("List after MoveAside = %v", ids)
	}
	if err := m.Sweep(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(to); err != nil {
		t.Errorf("Sweep deleted an orphaned directory: %v", err)
	}
	if got, err := workspace.Orphans(state); err != nil || len(got) != 1 || got[0] != to {
		t.Errorf("Orphans = %v, %v", got, err)
	}
	if _, err := m.MoveAside("../x", now); err == nil {
		t.Error("MoveAside accepted a path as an id")
	}
}

func TestUncommittedUntilCommit(t *testing.T) {
	m := workspace.New(t.TempDir())
	if _, err := m.Create("c0ffee"); err != nil {
		t.Fatal(err)
	}
	if !m.Uncommitted("c0ffee") {
		t.Fatal("a new VM directory is not marked uncommitted")
	}
	if ids, _ := m.List(); len(ids) != 1 {
		t.Fatalf("List = %v", ids)
	}
	if err := m.Commit("c0ffee"); err != nil {
		t.Fatal(err)
	}
	if m.Uncommitted("c0ffee") {
		t.Fatal("a committed VM directory is still marked uncommitted")
	}
	if err := m.Commit("c0ffee"); err != nil {
		t.Errorf("second Commit: %v", err)
	}
	if m.Uncommitted("nope") {
		t.Error("a missing directory is uncommitted")
	}
}

// A VM directory is never visible without its uncommitted mark: a daemon
// killed at that moment would leave one that Reconcile must keep (moved
// aside) instead of a create cut short that it deletes.
func TestCreateNeverShowsAnUnmarkedDir(t *testing.T) {
	state := t.TempDir()
	m := workspace.New(state)
	root := filepath.Join(state, "vms")
	if err := os.MkdirAll(root, 0o700); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	seen := make(chan string, 1)
	go func() {
		defer close(seen)
		for {
			select {
			case <-stop:
				return
			default:
			}
			ents, _ := os.ReadDir(root)
			for _, e := range ents {
				id := e.Name()
				if id[0] == '.' {
					continue
				}
				if _, err := os.Lstat(filepath.Join(root, id, ".uncommitted")); errors.Is(err, os.ErrNotExist) {
					if _, err := os.Lstat(filepath.Join(root, id)); err == nil {
						seen <- id
						return
					}
				}
			}
		}
	}()
	for i := range 3000 {
		id := "vm" + strconv.Itoa(i)
		if _, err := m.Create(id); err != nil {
			close(stop)
			t.Fatal(err)
		}
		if i%50 == 49 {
			time.Sleep(time.Millisecond)
		}
	}
	close(stop)
	if id, ok := <-seen; ok {
		t.Fatalf("VM directory %s was seen without its uncommitted mark", id)
	}
	if _, err := m.Create("vm0"); err == nil {
		t.Fatal("Create made a directory that already exists")
	}
	if !m.Uncommitted("vm0") {
		t.Fatal("a refused Create touched the existing directory's mark")
	}
}
