package doctor_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"banger/internal/daemon/workspace"
	"banger/internal/doctor"
	"banger/internal/store"
)

// boundStore makes the store a daemon leaves in stateDir: tied to it.
func boundStore(t *testing.T, stateDir string) {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(stateDir, "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Bind(ctx, stateDir, false); err != nil {
		t.Fatal(err)
	}
}

func mkdir(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o700); err != nil {
		t.Fatal(err)
	}
}

func TestStoreCheck(t *testing.T) {
	f := newFakeHost(t)
	cases := []struct {
		name   string
		setup  func(t *testing.T, state string)
		status doctor.Status
		detail string
		fix    string
	}{
		{"no store yet", func(*testing.T, string) {}, doctor.OK, "no store yet", ""},
		{"healthy", boundStore, doctor.OK, "quick check ok, tied to its state dir", ""},
		{"deleted beside VMs", func(t *testing.T, state string) {
			boundStore(t, state)
			mkdir(t, filepath.Join(state, "vms", "0123"))
			if err := os.Remove(filepath.Join(state, "banger.db")); err != nil {
				t.Fatal(err)
			}
		}, doctor.Fail, "banger.db is missing, but the state dir holds VMs or images", "--adopt-store"},
		{"emptied beside VMs", func(t *testing.T, state string) {
			boundStore(t, state)
			mkdir(t, filepath.Join(state, "vms", "0123"))
			if err := os.Truncate(filepath.Join(state, "banger.db"), 0); err != nil {
				t.Fatal(err)
			}
		}, doctor.Fail, "banger.db is empty, but the state dir holds VMs or images", "--adopt-store"},
		{"another state dir's", func(t *testing.T, state string) {
			boundStore(t, state)
			if err := os.WriteFile(filepath.Join(state, store.StateIDFile), []byte("00000000000000000000000000000009\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, doctor.Fail, "says 00000000000000000000000000000009: it is another state dir's store", "put the right banger.db back"},
		{"damaged", func(t *testing.T, state string) {
			if err := os.WriteFile(filepath.Join(state, "banger.db"), make([]byte, 8192), 0o600); err != nil {
				t.Fatal(err)
			}
		}, doctor.Fail, "is damaged", "restore a backup"},
		{"readable by others", func(t *testing.T, state string) {
			boundStore(t, state)
			if err := os.Chmod(filepath.Join(state, "banger.db"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, doctor.Warn, "mode 0644", "chmod 600"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := settings(t)
			c.setup(t, s.StateDir)
			expect(t, find(t, run(f.host(0), s), "store"), c.status, c.detail, c.fix)
		})
	}
}

func TestOrphansCheck(t *testing.T) {
	f := newFakeHost(t)
	s := settings(t)
	expect(t, find(t, run(f.host(0), s), "orphaned-vms"), doctor.OK, "no VM directories were moved aside", "")
	ws := workspace.New(s.StateDir)
	if _, err := ws.Create("0a0b"); err != nil {
		t.Fatal(err)
	}
	to, err := ws.MoveAside("0a0b", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	expect(t, find(t, run(f.host(0), s), "orphaned-vms"), doctor.Warn, "1 VM directory was moved aside because the store had no row for them", "rm -r DIR")
	expect(t, find(t, run(f.host(0), s), "orphaned-vms"), doctor.Warn, to, "banger image register")
}
