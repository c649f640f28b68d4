package update

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"banger/internal/testutil/treestate"
)

// newInstall makes a directory with the three binaries, each holding
// "<version> <name>", and returns it located.
func newInstall(t *testing.T, version string) *Install {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "bin")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range Binaries {
		writeBin(t, filepath.Join(dir, name), version+" "+name)
	}
	in, err := Locate(filepath.Join(dir, "banger"))
	if err != nil {
		t.Fatalf("Locate: %v", err)
	}
	return in
}

func writeBin(t *testing.T, p, content string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestLocateFindsTheInstallThroughASymlink(t *testing.T) {
	in := newInstall(t, "v1")
	link := filepath.Join(t.TempDir(), "banger")
	if err := os.Symlink(in.Path("banger"), link); err != nil {
		t.Fatal(err)
	}
	got, err := Locate(link)
	if err != nil || got.Dir != in.Dir {
		t.Fatalf("Locate(symlink) = %+v, %v; want dir %s", got, err, in.Dir)
	}
}

// refusedUnchanged asserts err is a refusal naming want and that the tree
// under root did not change.
func refusedUnchanged(t *testing.T, root string, before map[string]treestate.Entry, err error, want string) {
	t.Helper()
	var re *RefusedError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), want) || !strings.HasSuffix(err.Error(), "nothing was changed") {
		t.Fatalf("error %v, want a refusal saying %q and that nothing was changed", err, want)
	}
	if after := treestate.Snapshot(t, root); !reflect.DeepEqual(before, after) {
		t.Fatalf("the tree changed:\nbefore %v\nafter  %v", before, after)
	}
}

func TestLocateRefusals(t *testing.T) {
	t.Run("source checkout", func(t *testing.T) {
		root := t.TempDir()
		bin := filepath.Join(root, "build", "bin")
		if err := os.MkdirAll(bin, 0o755); err != nil {
			t.Fatal(err)
		}
		writeBin(t, filepath.Join(root, "go.mod"), "module banger\n")
		for _, n := range Binaries {
			writeBin(t, filepath.Join(bin, n), "dev")
		}
		before := treestate.Snapshot(t, root)
		_, err := Locate(filepath.Join(bin, "banger"))
		refusedUnchanged(t, root, before, err, "make build")
	})
	t.Run("missing binary", func(t *testing.T) {
		in := newInstall(t, "v1")
		os.Remove(in.Path("banger-vsock-agent"))
		before := treestate.Snapshot(t, in.Dir)
		_, err := Locate(in.Path("banger"))
		refusedUnchanged(t, in.Dir, before, err, "banger-vsock-agent is missing")
	})
	t.Run("symlinked binary", func(t *testing.T) {
		in := newInstall(t, "v1")
		os.Remove(in.Path("bangerd"))
		if err := os.Symlink("/bin/true", in.Path("bangerd")); err != nil {
			t.Fatal(err)
		}
		before := treestate.Snapshot(t, in.Dir)
		_, err := Locate(in.Path("banger"))
		refusedUnchanged(t, in.Dir, before, err, "is a symbolic link")
	})
	t.Run("no write access", func(t *testing.T) {
		in := newInstall(t, "v1")
		old := access
		t.Cleanup(func() { access = old })
		access = func(p string, mode uint32) error {
			if p == in.Path("bangerd") {
				return syscall.EACCES
			}
			return nil
		}
		before := treestate.Snapshot(t, in.Dir)
		_, err := Locate(in.Path("banger"))
		want := "cannot write " + in.Path("bangerd")
		if os.Geteuid() != 0 {
			want = "sudo " + in.Path("banger") + " update"
		}
		refusedUnchanged(t, in.Dir, before, err, want)
	})
}

func TestLockIsExclusive(t *testing.T) {
	in := newInstall(t, "v1")
	unlock, err := in.Lock()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.Lock(); err == nil || !strings.Contains(err.Error(), "another `banger update` is running") {
		t.Fatalf("second Lock: %v", err)
	}
	unlock()
	unlock2, err := in.Lock()
	if err != nil {
		t.Fatalf("Lock after unlock: %v", err)
	}
	unlock2()
}

func TestStageIsPrivateAndClearsStaleOnes(t *testing.T) {
	in := newInstall(t, "v1")
	stale := filepath.Join(in.Dir, stagePrefix+"old")
	if err := os.Mkdir(stale, 0o700); err != nil {
		t.Fatal(err)
	}
	writeBin(t, filepath.Join(stale, "bangerd"), "half")
	dir, err := in.Stage()
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 || filepath.Dir(dir) != in.Dir {
		t.Fatalf("stage %s: %v %v, want a 0700 dir inside %s", dir, fi.Mode(), err, in.Dir)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatalf("stale staging dir left: %v", err)
	}
}

// What only looks like a stale staging directory is left alone: a
// symbolic link (never followed) and another user's directory.
func TestStageLeavesWhatNoUpdateMade(t *testing.T) {
	in := newInstall(t, "v1")
	victim := t.TempDir()
	writeBin(t, filepath.Join(victim, "precious"), "keep")
	if err := os.Symlink(victim, filepath.Join(in.Dir, stagePrefix+"link")); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(in.Dir, stagePrefix+"other")
	if os.Geteuid() == 0 {
		if err := os.Mkdir(other, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(other, 54321, 54321); err != nil {
			t.Fatal(err)
		}
	}
	dir, err := in.Stage()
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if read(t, filepath.Join(victim, "precious")) != "keep" {
		t.Error("the link was followed")
	}
	if _, err := os.Lstat(filepath.Join(in.Dir, stagePrefix+"link")); err != nil {
		t.Errorf("the link was removed: %v", err)
	}
	if os.Geteuid() == 0 {
		if _, err := os.Stat(other); err != nil {
			t.Errorf("another user's directory was removed: %v", err)
		}
	}
}

// An install on a read-only filesystem (a real tmpfs remounted ro) is
// refused by Locate, with what to do.
func TestLocateRefusesAReadOnlyFilesystem(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", mnt).Run() })
	for _, n := range Binaries {
		writeBin(t, filepath.Join(mnt, n), "v1 "+n)
	}
	if out, err := exec.Command("mount", "-o", "remount,ro", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot remount read-only: %v %s", err, out)
	}
	before := treestate.Snapshot(t, mnt)
	_, err := Locate(filepath.Join(mnt, "banger"))
	refusedUnchanged(t, mnt, before, err, "is on a read-only filesystem: remount it read-write")
}
