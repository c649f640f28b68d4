package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBind(t *testing.T) {
	const other = "00000000000000000000000000000001"
	cases := []struct {
		name     string
		fileID   string // "" = no state-id file
		storeID  string
		rows     bool
		data     bool // a VM directory in the state dir
		adopt    bool
		refused  string // part of the error, "" = accepted
		sameAsFS bool   // the id kept is the file's
	}{
		{name: "new install"},
		{name: "upgrade from before ids", rows: true, data: true},
		{name: "agree", fileID: other, storeID: other, rows: true, data: true, sameAsFS: true},
		{name: "emptied store", fileID: other, data: true, refused: "the store is empty"},
		{name: "emptied store before ids", data: true, refused: "the store is empty"},
		{name: "emptied store, nothing to lose", fileID: other, sameAsFS: true},
		{name: "restored backup from before ids", fileID: other, rows: true, data: true, sameAsFS: true},
		{name: "other state dir's store", fileID: other, storeID: "00000000000000000000000000000002", rows: true, refused: "the store records state dir id 00000000000000000000000000000002"},
		{name: "state-id deleted", storeID: other, rows: true, refused: "has no state-id file"},
		{name: "adopt empty store", fileID: other, data: true, adopt: true, sameAsFS: true},
		{name: "adopt other store", fileID: other, storeID: "00000000000000000000000000000002", adopt: true, sameAsFS: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			state := t.TempDir()
			s := openTest(t, filepath.Join(state, "banger.db"), allMigrations(t))
			if c.fileID != "" {
				if err := writeStateID(state, c.fileID); err != nil {
					t.Fatal(err)
				}
			}
			if c.storeID != "" {
				if err := s.setStateID(ctx, c.storeID); err != nil {
					t.Fatal(err)
				}
			}
			if c.rows {
				insertCore(t, s, "x")
			}
			if c.data {
				if err := os.MkdirAll(filepath.Join(state, "vms", "0123abcd"), 0o700); err != nil {
					t.Fatal(err)
				}
			}
			b, err := s.Bind(ctx, state, c.adopt)
			fileAfter, _ := ReadStateID(state)
			storeAfter, _ := s.StateID(ctx)
			if c.refused != "" {
				var ie *IdentityError
				if !errors.As(err, &ie) || !strings.Contains(err.Error(), c.refused) || !strings.Contains(err.Error(), "--adopt-store") {
					t.Fatalf("Bind = %v, want an *IdentityError saying %q", err, c.refused)
				}
				if fileAfter != c.fileID || storeAfter != c.storeID {
					t.Errorf("a refused Bind changed the ids: file %q store %q", fileAfter, storeAfter)
				}
				return
			}
			if err != nil {
				t.Fatalf("Bind: %v", err)
			}
			if !validID(b.ID) || fileAfter != b.ID || storeAfter != b.ID {
				t.Errorf("after Bind: id %q, file %q, store %q", b.ID, fileAfter, storeAfter)
			}
			if c.sameAsFS && b.ID != c.fileID {
				t.Errorf("id %q, want the state dir's %q", b.ID, c.fileID)
			}
			// Bound: the next start agrees without a note.
			b2, err := s.Bind(ctx, state, false)
			if err != nil || b2.ID != b.ID || b2.Note != "" {
				t.Errorf("second Bind = %+v, %v", b2, err)
			}
		})
	}
}

func TestReadStateIDRejectsGarbage(t *testing.T) {
	state := t.TempDir()
	if err := os.WriteFile(filepath.Join(state, StateIDFile), []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadStateID(state); err == nil || !strings.Contains(err.Error(), "not a state dir id") {
		t.Errorf("ReadStateID of garbage = %v", err)
	}
}

func TestStateDirData(t *testing.T) {
	state := t.TempDir()
	for _, d := range []string{"vms/.trash-1", "images/tmp/apt-1", "images/.pull-2", "kernels"} {
		if err := os.MkdirAll(filepath.Join(state, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := StateDirData(state); err != nil || got != "" {
		t.Errorf("StateDirData with only temporary entries = %q, %v", got, err)
	}
	if err := os.MkdirAll(filepath.Join(state, "vms", ".orphaned-1-x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if got, _ := StateDirData(state); !strings.HasSuffix(got, ".orphaned-1-x") {
		t.Errorf("StateDirData with an orphaned VM dir = %q", got)
	}
}
