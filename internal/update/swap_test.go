package update

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"banger/internal/testutil/treestate"
)

// stage writes the new binaries ("<version> <name>") into a staging dir.
func stage(t *testing.T, in *Install, version string) map[string]string {
	t.Helper()
	dir, err := in.Stage()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, n := range Binaries {
		m[n] = filepath.Join(dir, n)
		writeBin(t, m[n], version+" "+n)
	}
	return m
}

// assertBinaries checks each binary (and, if prev != "", each .prev).
func assertBinaries(t *testing.T, in *Install, version, prev string) {
	t.Helper()
	for _, n := range Binaries {
		if got := read(t, in.Path(n)); got != version+" "+n {
			t.Errorf("%s = %q, want %s", n, got, version)
		}
		fi, err := os.Stat(in.Path(n))
		if err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("%s mode %v, %v", n, fi.Mode(), err)
		}
		_, err = os.Lstat(in.Prev(n))
		switch {
		case prev == "" && !os.IsNotExist(err):
			t.Errorf("%s.prev exists (%v), want none", n, err)
		case prev != "" && read(t, in.Prev(n)) != prev+" "+n:
			t.Errorf("%s.prev = %q, want %s", n, read(t, in.Prev(n)), prev)
		}
	}
}

func TestSwapKeepsPrevAndJournals(t *testing.T) {
	in := newInstall(t, "v1")
	old, _ := os.Stat(in.Path("bangerd"))
	if err := in.Swap(stage(t, in, "v2"), "v1", "v2"); err != nil {
		t.Fatal(err)
	}
	assertBinaries(t, in, "v2", "v1")
	prev, _ := os.Stat(in.Prev("bangerd"))
	if !os.SameFile(old, prev) {
		t.Error("bangerd.prev is not the old file itself (a hard link)")
	}
	if j, err := in.ReadJournal(); err != nil || j != (Journal{From: "v1", To: "v2", State: StateSwapped}) {
		t.Errorf("journal %+v, %v", j, err)
	}
	if err := in.Interrupted(); err == nil || !strings.Contains(err.Error(), "--rollback") {
		t.Errorf("a swap not marked done is not reported as interrupted: %v", err)
	}
	if err := in.MarkDone("v1", "v2"); err != nil || in.Interrupted() != nil {
		t.Errorf("after MarkDone: %v, %v", err, in.Interrupted())
	}
}

func TestSwapRefusesAMissingStagedFileBeforeChangingAnything(t *testing.T) {
	in := newInstall(t, "v1")
	staged := stage(t, in, "v2")
	os.Remove(staged["banger"])
	os.RemoveAll(filepath.Dir(staged["banger"])) // the snapshot compares the install only
	before := treestate.Snapshot(t, in.Dir)
	if err := in.Swap(staged, "v1", "v2"); err == nil {
		t.Fatal("Swap with a staged file missing succeeded")
	}
	if after := treestate.Snapshot(t, in.Dir); !reflect.DeepEqual(before, after) {
		t.Fatalf("the install changed: %v -> %v", before, after)
	}
}

// A swap that stops half way (a failed rename here; a SIGKILL is the same
// state) leaves every binary in place, old or new, every .prev the old
// version, and a journal that sends the user to --rollback, which puts
// the old version back whole.
func TestHalfSwapIsRecoveredByRestorePrev(t *testing.T) {
	in := newInstall(t, "v1")
	staged := stage(t, in, "v2")
	n := 0
	rename = func(a, b string) error {
		if n++; n == 2 {
			return &os.LinkError{Op: "rename", Old: a, New: b, Err: syscall.EIO}
		}
		return os.Rename(a, b)
	}
	t.Cleanup(func() { rename = os.Rename })
	if err := in.Swap(staged, "v1", "v2"); err == nil || !strings.Contains(err.Error(), "put the new bangerd in place") {
		t.Fatalf("Swap: %v", err)
	}
	rename = os.Rename
	for _, name := range Binaries {
		got := read(t, in.Path(name))
		if got != "v1 "+name && got != "v2 "+name {
			t.Errorf("%s = %q mid-swap", name, got)
		}
		if read(t, in.Prev(name)) != "v1 "+name {
			t.Errorf("%s.prev is not v1", name)
		}
	}
	if err := in.Interrupted(); err == nil || !strings.Contains(err.Error(), "from v1 to v2 was interrupted") {
		t.Fatalf("Interrupted: %v", err)
	}
	from, err := in.RestorePrev()
	if err != nil || from != "v1" {
		t.Fatalf("RestorePrev = %q, %v", from, err)
	}
	assertBinaries(t, in, "v1", "")
	if in.Interrupted() != nil {
		t.Errorf("still interrupted after the rollback: %v", in.Interrupted())
	}
}

func TestRestorePrevFinishesAnInterruptedRollback(t *testing.T) {
	in := newInstall(t, "v1")
	if err := in.Swap(stage(t, in, "v2"), "v1", "v2"); err != nil {
		t.Fatal(err)
	}
	// The rollback was killed after putting banger-vsock-agent back.
	if err := os.Rename(in.Prev("banger-vsock-agent"), in.Path("banger-vsock-agent")); err != nil {
		t.Fatal(err)
	}
	if err := in.writeJournal(Journal{From: "v1", To: "v2", State: StateRollingBack}); err != nil {
		t.Fatal(err)
	}
	if err := in.Interrupted(); err == nil || !strings.Contains(err.Error(), "rollback to v1 was interrupted") {
		t.Fatalf("Interrupted: %v", err)
	}
	if from, err := in.RestorePrev(); err != nil || from != "v1" {
		t.Fatalf("RestorePrev = %q, %v", from, err)
	}
	assertBinaries(t, in, "v1", "")
}

func TestRestorePrevRefusals(t *testing.T) {
	t.Run("no prev", func(t *testing.T) {
		in := newInstall(t, "v1")
		before := treestate.Snapshot(t, in.Dir)
		_, err := in.RestorePrev()
		refusedUnchanged(t, in.Dir, before, err, "no previous version is kept")
	})
	t.Run("one prev missing", func(t *testing.T) {
		in := newInstall(t, "v1")
		if err := in.Swap(stage(t, in, "v2"), "v1", "v2"); err != nil {
			t.Fatal(err)
		}
		os.Remove(in.Prev("bangerd"))
		before := treestate.Snapshot(t, in.Dir)
		_, err := in.RestorePrev()
		refusedUnchanged(t, in.Dir, before, err, "bangerd.prev missing")
	})
	t.Run("interrupted while linking", func(t *testing.T) {
		in := newInstall(t, "v1")
		if err := in.writeJournal(Journal{From: "v1", To: "v2", State: StateLinking}); err != nil {
			t.Fatal(err)
		}
		before := treestate.Snapshot(t, in.Dir)
		_, err := in.RestorePrev()
		refusedUnchanged(t, in.Dir, before, err, "had not replaced any binary")
		if in.Interrupted() != nil {
			t.Errorf("an update stopped while linking blocks a new one: %v", in.Interrupted())
		}
	})
	t.Run("already rolled back", func(t *testing.T) {
		in := newInstall(t, "v1")
		if err := in.Swap(stage(t, in, "v2"), "v1", "v2"); err != nil {
			t.Fatal(err)
		}
		if _, err := in.RestorePrev(); err != nil {
			t.Fatal(err)
		}
		before := treestate.Snapshot(t, in.Dir)
		_, err := in.RestorePrev()
		refusedUnchanged(t, in.Dir, before, err, "already rolled back to v1")
	})
}

func TestDamagedJournalIsAnError(t *testing.T) {
	in := newInstall(t, "v1")
	writeBin(t, in.Path(JournalFile), "{not json")
	if _, err := in.ReadJournal(); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("ReadJournal: %v", err)
	}
	if err := in.Interrupted(); err == nil {
		t.Fatal("Interrupted ignored a damaged journal")
	}
}

func TestKeepPrevCopiesWhenLinkIsRefused(t *testing.T) {
	// A hard link across filesystems fails (EXDEV): the copy is used.
	dir := t.TempDir()
	src := filepath.Join(dir, "bangerd")
	writeBin(t, src, "v1 bangerd")
	if err := copyFile(src, filepath.Join(dir, "copy")); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(dir, "copy")); got != "v1 bangerd" {
		t.Fatalf("copy = %q", got)
	}
	if err := copyFile(src, filepath.Join(dir, "copy")); !errors.Is(err, os.ErrExist) {
		t.Fatalf("copyFile over an existing file: %v", err)
	}
	if os.Geteuid() == 0 {
		// Root copies a user's binary as theirs.
		if err := os.Chown(src, 54321, 54322); err != nil {
			t.Fatal(err)
		}
		if err := copyFile(src, filepath.Join(dir, "copy2")); err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Stat(filepath.Join(dir, "copy2"))
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 54321 || st.Gid != 54322 || fi.Mode().Perm() != 0o755 {
			t.Errorf("copy owned %d:%d mode %v, want 54321:54322 0755", st.Uid, st.Gid, fi.Mode())
		}
	}
}

// Root updating a user's install (sudo) leaves the new binaries owned as
// the old ones were, so that the user can update it again.
func TestSwapKeepsTheOwnerOfEachBinary(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files to another user")
	}
	in := newInstall(t, "v1")
	for _, n := range Binaries {
		if err := os.Chown(in.Path(n), 54321, 54322); err != nil {
			t.Fatal(err)
		}
	}
	if err := in.Swap(stage(t, in, "v2"), "v1", "v2"); err != nil {
		t.Fatal(err)
	}
	for _, n := range Binaries {
		fi, err := os.Stat(in.Path(n))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != 54321 || st.Gid != 54322 || fi.Mode().Perm() != 0o755 {
			t.Errorf("new %s: uid %d gid %d mode %v, want 54321 54322 0755", n, st.Uid, st.Gid, fi.Mode())
		}
	}
	// And the .prev files (the old inodes) still belong to the user, so
	// RestorePrev accepts them.
	if _, err := in.RestorePrev(); err != nil {
		t.Fatal(err)
	}
}

// An update interrupted while linking, run again, links each .prev to the
// file it already is: nothing is left beside them.
func TestSwapAfterAnInterruptedLinkingLeavesNoTemporaryFiles(t *testing.T) {
	in := newInstall(t, "v1")
	for _, n := range Binaries {
		if err := os.Link(in.Path(n), in.Prev(n)); err != nil {
			t.Fatal(err)
		}
	}
	if err := in.writeJournal(Journal{From: "v1", To: "v2", State: StateLinking}); err != nil {
		t.Fatal(err)
	}
	staged := stage(t, in, "v2")
	if err := in.Swap(staged, "v1", "v2"); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Dir(staged["banger"]))
	assertBinaries(t, in, "v2", "v1")
	left, _ := filepath.Glob(filepath.Join(in.Dir, "*.tmp"))
	if len(left) != 0 {
		t.Errorf("left behind: %q", left)
	}
}

// A .prev that is the live binary itself (a hard link made by hand, or a
// journal that does not match the files) holds no previous version: a
// rollback outside an interrupted swap refuses it rather than "rolling
// back" to the same binaries under the journal's older version.
func TestRestorePrevRefusesAPrevThatIsTheLiveBinary(t *testing.T) {
	in := newInstall(t, "v2")
	for _, n := range Binaries {
		if err := os.Link(in.Path(n), in.Prev(n)); err != nil {
			t.Fatal(err)
		}
	}
	if err := in.writeJournal(Journal{From: "v1", To: "v2", State: StateDone}); err != nil {
		t.Fatal(err)
	}
	before := treestate.Snapshot(t, in.Dir)
	_, err := in.RestorePrev()
	refusedUnchanged(t, in.Dir, before, err, "so it holds no previous version")
}

// A kill at any rename of a swap or of a rollback: before each rename
// every binary exists (never a moment without one), and the state left by
// stopping there is put back whole by RestorePrev (run again when the
// rollback itself was the one stopped).
func TestKillAtEveryRename(t *testing.T) {
	errKilled := errors.New("killed")
	checkWhole := func(t *testing.T, in *Install) {
		t.Helper()
		for _, n := range Binaries {
			if _, err := os.Lstat(in.Path(n)); err != nil {
				t.Fatalf("%s missing at a rename: %v", n, err)
			}
		}
	}
	for swapKill := 1; swapKill <= len(Binaries)+1; swapKill++ {
		for rollKill := 0; rollKill <= len(Binaries); rollKill++ {
			t.Run(fmt.Sprintf("swap killed at rename %d, rollback at %d", swapKill, rollKill), func(t *testing.T) {
				in := newInstall(t, "v1")
				staged := stage(t, in, "v2")
				n, killAt := 0, swapKill
				rename = func(a, b string) error {
					checkWhole(t, in)
					if n++; n == killAt {
						return errKilled
					}
					return os.Rename(a, b)
				}
				t.Cleanup(func() { rename = os.Rename })
				err := in.Swap(staged, "v1", "v2")
				if swapKill <= len(Binaries) && !errors.Is(err, errKilled) {
					t.Fatalf("Swap: %v", err)
				}
				// The rollback, itself killed at rename rollKill (0: not).
				n, killAt = 0, rollKill
				if _, err := in.RestorePrev(); rollKill > 0 && err != nil && !errors.Is(err, errKilled) {
					t.Fatalf("first RestorePrev: %v", err)
				}
				rename = func(a, b string) error { checkWhole(t, in); return os.Rename(a, b) }
				if rollKill > 0 {
					if j, _ := in.ReadJournal(); j.State == StateRollingBack {
						if _, err := in.RestorePrev(); err != nil {
							t.Fatalf("second RestorePrev: %v", err)
						}
					}
				}
				for _, name := range Binaries {
					if got := read(t, in.Path(name)); got != "v1 "+name {
						t.Errorf("%s = %q after the rollback", name, got)
					}
				}
			})
		}
	}
}
