package update

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/testutil/treestate"
)

// A journal or a .prev file that an update cannot have made (planted by
// another user in a shared directory, or damaged) is refused before
// anything changes, and never followed.
func TestHostileJournalIsRefused(t *testing.T) {
	for _, tc := range []struct {
		name  string
		plant func(t *testing.T, in *Install, p string)
		want  string
	}{
		{"a symbolic link", func(t *testing.T, in *Install, p string) {
			target := filepath.Join(t.TempDir(), "elsewhere.json")
			writeBin(t, target, `{"from":"v1","to":"v2","state":"swapped"}`)
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
		}, "is a symbolic link"},
		{"a FIFO (would block a plain read)", func(t *testing.T, in *Install, p string) {
			if err := syscall.Mkfifo(p, 0o644); err != nil {
				t.Fatal(err)
			}
		}, "not a regular file"},
		{"a directory", func(t *testing.T, in *Install, p string) {
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}, "not a regular file"},
		{"huge", func(t *testing.T, in *Install, p string) {
			writeBin(t, p, `{"from":"v1","to":"v2","state":"done"}`+strings.Repeat(" ", 1<<20))
		}, "longer than 4096 bytes"},
		{"a terminal escape in a version", func(t *testing.T, in *Install, p string) {
			writeBin(t, p, `{"from":"v1\u001b]0;pwned\u0007","to":"v2","state":"done"}`)
		}, "is not a version"},
		{"a terminal escape in the state", func(t *testing.T, in *Install, p string) {
			writeBin(t, p, `{"from":"v1","to":"v2","state":"done\u001b[2J"}`)
		}, "is not a state"},
		{"a version too long", func(t *testing.T, in *Install, p string) {
			writeBin(t, p, `{"from":"v1","to":"v`+strings.Repeat("9", 200)+`","state":"done"}`)
		}, "is not a version"},
		{"two values", func(t *testing.T, in *Install, p string) {
			writeBin(t, p, `{"from":"v1","to":"v2","state":"done"}{}`)
		}, "more than one JSON value"},
		{"owned by another user", func(t *testing.T, in *Install, p string) {
			if os.Geteuid() != 0 {
				t.Skip("needs root to give a file to another user")
			}
			writeBin(t, p, `{"from":"v1","to":"v2","state":"swapped"}`)
			if err := os.Chown(p, 54321, 54321); err != nil {
				t.Fatal(err)
			}
		}, "neither root, you nor the owner of"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := newInstall(t, "v2")
			if err := in.Swap(stage(t, in, "v3"), "v2", "v3"); err != nil {
				t.Fatal(err)
			}
			os.Remove(in.Path(JournalFile))
			tc.plant(t, in, in.Path(JournalFile))
			before := treestate.Snapshot(t, in.Dir)
			done := make(chan struct{})
			go func() {
				defer close(done)
				_, err := in.RestorePrev()
				refusedUnchanged(t, in.Dir, before, err, tc.want)
				if err := in.Interrupted(); err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("Interrupted: %v", err)
				}
			}()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("reading the journal blocked")
			}
		})
	}
}

func TestPlantedPrevIsNeverRenamedOverABinary(t *testing.T) {
	for _, tc := range []struct {
		name  string
		plant func(t *testing.T, p string)
		want  string
	}{
		{"a symbolic link", func(t *testing.T, p string) {
			target := filepath.Join(t.TempDir(), "evil")
			writeBin(t, target, "evil")
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
		}, "is a symbolic link"},
		{"owned by another user", func(t *testing.T, p string) {
			if os.Geteuid() != 0 {
				t.Skip("needs root to give a file to another user")
			}
			writeBin(t, p, "evil")
			if err := os.Chown(p, 54321, 54321); err != nil {
				t.Fatal(err)
			}
		}, "neither root, you nor the owner of"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := newInstall(t, "v1")
			if err := in.Swap(stage(t, in, "v2"), "v1", "v2"); err != nil {
				t.Fatal(err)
			}
			os.Remove(in.Prev("bangerd"))
			tc.plant(t, in.Prev("bangerd"))
			before := treestate.Snapshot(t, in.Dir)
			_, err := in.RestorePrev()
			refusedUnchanged(t, in.Dir, before, err, tc.want)
		})
	}
}

func FuzzParseJournal(f *testing.F) {
	f.Add([]byte(`{"from":"v0.3.0","to":"v0.3.1","state":"swapped"}`))
	f.Add([]byte(`{"from":"","to":"v1.0.0-rc.1","state":"rolled-back"}`))
	f.Add([]byte(`{"from":"v1","to":"v2","state":"done"} `))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		j, err := ParseJournal(data)
		if err != nil {
			return
		}
		for _, v := range []string{j.From, j.To} {
			if !plainVersion(v) {
				t.Fatalf("accepted version %q", v)
			}
		}
		if !plainState(j.State) {
			t.Fatalf("accepted state %q", j.State)
		}
	})
}

// A journal written by a later version (a field or a state this one does
// not know) is read, not refused: after a rollback to this version it
// must not block its next update.
func TestJournalOfALaterVersionIsRead(t *testing.T) {
	j, err := ParseJournal([]byte(`{"from":"v1.2.0","to":"v1.3.0","state":"verified","started":"2026-12-01T00:00:00Z"}`))
	if err != nil || j != (Journal{From: "v1.2.0", To: "v1.3.0", State: "verified"}) {
		t.Fatalf("ParseJournal = %+v, %v", j, err)
	}
	in := newInstall(t, "v1")
	writeBin(t, in.Path(JournalFile), `{"from":"v1.2.0","to":"v1.3.0","state":"verified","started":"x"}`)
	if err := in.Interrupted(); err != nil {
		t.Fatalf("Interrupted: %v", err)
	}
}

// A build stamped with a version the reader would refuse does not make a
// journal that blocks the next update: the odd version is written as
// unknown.
func TestJournalOfAnOddBuildVersionStaysReadable(t *testing.T) {
	in := newInstall(t, "v1")
	if err := in.writeJournal(Journal{From: "(devel) build/42", To: "v0.3.1", State: StateDone}); err != nil {
		t.Fatal(err)
	}
	j, err := in.ReadJournal()
	if err != nil || j != (Journal{From: "", To: "v0.3.1", State: StateDone}) {
		t.Fatalf("ReadJournal = %+v, %v", j, err)
	}
}
