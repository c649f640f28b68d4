package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"banger/internal/atomicfile"
)

// StateIDFile is the file in the state dir that holds the state dir's id.
// The store keeps the same id (meta key state_dir_id), so a store that is
// new, emptied, deleted or taken from elsewhere is noticed before anything
// acts on it.
const StateIDFile = "state-id"

const metaStateID = "state_dir_id"

// IdentityError says the store and the state dir do not belong together.
// Nothing was changed.
type IdentityError struct {
	Store    string
	StateDir string
	Problem  string
}

func (e *IdentityError) Error() string {
	restore := "there is no backup of it beside it"
	if bs := Backups(e.Store); len(bs) > 0 {
		restore = "backups: " + strings.Join(bs, ", ")
	}
	return fmt.Sprintf("store %s does not belong to state dir %s: %s. Nothing was changed. If the store was lost, stop here and put the right banger.db back (%s); to go on with this store instead, start bangerd once with --adopt-store: VM directories it has no row for are then moved aside (vms/.orphaned-*), never deleted, and `banger doctor` lists them",
		e.Store, e.StateDir, e.Problem, restore)
}

// ReadStateID returns the id recorded in the state dir, or "" when it has
// none yet.
func ReadStateID(stateDir string) (string, error) {
	p := filepath.Join(stateDir, StateIDFile)
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read the state dir's id: %w", err)
	}
	id := strings.TrimSpace(string(b))
	if !validID(id) {
		return "", fmt.Errorf("%s holds %q, not a state dir id (32 hex digits): it was edited or damaged; put the id the store records back (banger doctor shows it), or start bangerd once with --adopt-store", p, firstN(id, 40))
	}
	return id, nil
}

func firstN(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

func validID(id string) bool {
	if len(id) != 32 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil
}

func newStateID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// writeStateID records id in the state dir atomically (temp file, fsync,
// rename, fsync of the directory).
func writeStateID(stateDir, id string) error {
	path := filepath.Join(stateDir, StateIDFile)
	if err := atomicfile.WriteFile(path, []byte(id+"\n"), atomicfile.Mode(0o600)); err != nil {
		return fmt.Errorf("record the state dir's id in %s: %w", path, err)
	}
	return nil
}

// StateID returns the state dir id the store records, or "" when it has
// none (a new store, or one from before ids).
func (s *Store) StateID(ctx context.Context) (string, error) {
	var id string
	err := s.db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, metaStateID).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("store %s: read the state dir id: %w", s.path, err)
	}
	return id, nil
}

func (s *Store) setStateID(ctx context.Context, id string) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, metaStateID, id)
	if err != nil {
		return fmt.Errorf("store %s: record the state dir id: %w", s.path, err)
	}
	return nil
}

// hasRows reports whether the store holds any kernel, image or VM.
func (s *Store) hasRows(ctx context.Context) (bool, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM kernels) + (SELECT count(*) FROM images) + (SELECT count(*) FROM vms)`).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("store %s: count rows: %w", s.path, err)
	}
	return n > 0, nil
}

// StateDirData returns a VM directory, image or kernel found in stateDir
// (the first one seen), or "" when it holds none: the data a store that
// has forgotten it would treat as garbage. Temporary and trash entries
// (names starting with a dot, images/tmp) do not count; VM directories
// moved aside (vms/.orphaned-*) do.
func StateDirData(stateDir string) (string, error) {
	for _, sub := range []string{"vms", "images", "kernels"} {
		dir := filepath.Join(stateDir, sub)
		ents, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("look for data in the state dir: %w", err)
		}
		for _, e := range ents {
			n := e.Name()
			if !e.IsDir() || n == "tmp" || (strings.HasPrefix(n, ".") && !strings.HasPrefix(n, ".orphaned-")) {
				continue
			}
			return filepath.Join(dir, n), nil
		}
	}
	return "", nil
}

// Binding says what Bind did.
type Binding struct {
	ID string
	// Note is "" when store and state dir already agreed, else what was
	// recorded and why, for the log.
	Note string
}

// Bind ties the store to stateDir through an id both hold, and refuses
// (with an *IdentityError, changing nothing) when they do not belong
// together:
//
//   - both hold the same id: fine;
//   - the ids differ, or only the store has one: refused;
//   - only the state dir has one: a store with kernels, images or VMs is
//     taken as a backup restored from before ids and given it; an empty one
//     is refused when the state dir holds data (StateDirData), else given it;
//   - neither has one: a store with rows is an install from before ids, an
//     empty one with an empty state dir a new install, and both get a new
//     id; an empty store beside data is refused.
//
// adopt takes the store as it is whatever the case: the state dir's id (or
// the store's, or a new one) is written to both. The id is always written
// to the state dir before the store, so a crash in between leaves a case
// that the next start accepts.
func (s *Store) Bind(ctx context.Context, stateDir string, adopt bool) (Binding, error) {
	fileID, err := ReadStateID(stateDir)
	if err != nil && !adopt {
		return Binding{}, err
	}
	storeID, err := s.StateID(ctx)
	if err != nil {
		return Binding{}, err
	}
	if fileID != "" && fileID == storeID {
		return Binding{ID: fileID}, nil
	}
	refuse := func(problem string) (Binding, error) {
		return Binding{}, &IdentityError{Store: s.path, StateDir: stateDir, Problem: problem}
	}
	record := func(id, note string) (Binding, error) {
		if id != fileID {
			if err := writeStateID(stateDir, id); err != nil {
				return Binding{}, err
			}
		}
		if id != storeID {
			if err := s.setStateID(ctx, id); err != nil {
				return Binding{}, err
			}
		}
		return Binding{ID: id, Note: note}, nil
	}
	if adopt {
		id := fileID
		if id == "" {
			id = storeID
		}
		if id == "" {
			id = newStateID()
		}
		return record(id, "--adopt-store: the store was taken as this state dir's as it is")
	}
	switch {
	case fileID != "" && storeID != "":
		return refuse(fmt.Sprintf("the store records state dir id %s, but the state dir's %s says %s (the store was copied from another state dir, or replaced)", storeID, StateIDFile, fileID))
	case storeID != "":
		return refuse(fmt.Sprintf("the store records state dir id %s, but the state dir has no %s file (the store was copied from another state dir, or the file was deleted)", storeID, StateIDFile))
	}
	rows, err := s.hasRows(ctx)
	if err != nil {
		return Binding{}, err
	}
	if rows {
		if fileID != "" {
			return record(fileID, "the store has no state dir id (a backup from before ids): it was given this state dir's")
		}
		return record(newStateID(), "the store and state dir were given an id that ties them together")
	}
	data, err := StateDirData(stateDir)
	if err != nil {
		return Binding{}, err
	}
	if data != "" {
		return refuse(fmt.Sprintf("the store is empty (new, emptied or deleted), but the state dir holds VMs or images (%s)", data))
	}
	if fileID != "" {
		return record(fileID, "a new store was tied to this state dir, which holds no VMs or images")
	}
	return record(newStateID(), "new store and state dir")
}

// Inspection is what Inspect found in a store file.
type Inspection struct {
	Exists  bool
	Version int
	// StateID is the state dir id the store records ("" for none).
	StateID string
	// Rows says the store holds kernels, images or VMs.
	Rows bool
}

// Inspect reads the store at path without changing it (read-only, no
// migration) and runs the same quick check as Open. A damaged file gives a
// *CorruptError. For `banger doctor`.
func Inspect(ctx context.Context, path string) (Inspection, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Inspection{}, nil
	}
	if err != nil {
		return Inspection{}, fmt.Errorf("store %s: %w", path, err)
	}
	in := Inspection{Exists: true}
	if fi.Size() == 0 {
		return in, nil
	}
	db, err := sql.Open("sqlite", dsn(path, "ro"))
	if err != nil {
		return in, fmt.Errorf("store %s: open: %w", path, err)
	}
	defer db.Close()
	s := &Store{db: db, path: path}
	if in.Version, err = readVersion(ctx, db); err != nil {
		return in, s.readError(err)
	}
	if err := quickCheck(ctx, db, path); err != nil {
		return in, err
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name IN ('meta', 'vms')`).Scan(&n); err != nil {
		return in, fmt.Errorf("store %s: %w", path, err)
	}
	if n == 2 {
		if in.StateID, err = s.StateID(ctx); err != nil {
			return in, err
		}
		if in.Rows, err = s.hasRows(ctx); err != nil {
			return in, err
		}
	}
	return in, nil
}
