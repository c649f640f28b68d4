package store

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"sync"
)

// SchemaVersion is the newest schema version this binary knows: the number of
// embedded migrations. A test keeps the two equal.
const SchemaVersion = 7

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one numbered schema step. Migration n takes a store from
// version n-1 to version n.
type migration struct {
	version int
	name    string // file name, for messages
	sql     string
}

// embeddedMigrations returns the migrations built into this binary, in order.
var embeddedMigrations = sync.OnceValues(func() ([]migration, error) {
	return loadMigrations(migrationFiles, "migrations")
})

// loadMigrations reads NNNN_name.sql files from dir in fsys and checks that
// they are numbered 1, 2, 3, ... without gaps or duplicates.
func loadMigrations(fsys fs.FS, dir string) ([]migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	var migs []migration
	for _, e := range entries { // ReadDir sorts by name
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".sql") {
			continue
		}
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration file %s: name must be NNNN_description.sql", name)
		}
		if want := len(migs) + 1; v != want {
			return nil, fmt.Errorf("migration file %s: expected number %d (migrations must be numbered 1, 2, 3, ... with no gaps or duplicates)", name, want)
		}
		body, err := fs.ReadFile(fsys, path.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", name, err)
		}
		migs = append(migs, migration{version: v, name: name, sql: string(body)})
	}
	if len(migs) == 0 {
		return nil, fmt.Errorf("no migrations found in %s", dir)
	}
	return migs, nil
}

// queryer is what readVersion needs: a *sql.DB or a *sql.Tx.
type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// readVersion returns the schema version recorded in the database, or 0 for a
// database that has never been migrated.
func readVersion(ctx context.Context, q queryer) (int, error) {
	var n int
	err := q.QueryRowContext(ctx,
		`SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'schema_version'`).Scan(&n)
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, nil
	}
	var v int
	err = q.QueryRowContext(ctx, `SELECT version FROM schema_version WHERE id = 1`).Scan(&v)
	if err == sql.ErrNoRows {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return v, nil
}

// migrate applies every migration the database has not seen yet. Each one
// runs in its own transaction together with the bump of schema_version, so a
// failure leaves the store at the last version that succeeded. The version is
// re-read inside each (immediate, hence write-locked) transaction so that two
// processes opening the same store at once do not apply a step twice.
func (s *Store) migrate(ctx context.Context, migs []migration) error {
	for {
		done, err := s.migrateOne(ctx, migs)
		if err != nil || done {
			return err
		}
	}
}

func (s *Store) migrateOne(ctx context.Context, migs []migration) (done bool, err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("store %s: begin migration: %w", s.path, err)
	}
	defer func() {
		if err != nil || done {
			_ = tx.Rollback()
		}
	}()
	v, err := readVersion(ctx, tx)
	if err != nil {
		return false, fmt.Errorf("store %s: read schema version: %w", s.path, err)
	}
	if v > len(migs) {
		return false, &TooNewError{Path: s.path, Found: v, Known: len(migs)}
	}
	if v == len(migs) {
		return true, nil
	}
	m := migs[v]
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return false, fmt.Errorf("store %s: migration %s failed, the store stays at schema version %d: %w (this is a bug in banger; please report it)", s.path, m.name, v, err)
	}
	if _, err := tx.ExecContext(ctx,
		`INSERT INTO schema_version (id, version) VALUES (1, ?)
		 ON CONFLICT (id) DO UPDATE SET version = excluded.version`, m.version); err != nil {
		return false, fmt.Errorf("store %s: record schema version %d after %s, the store stays at schema version %d: %w", s.path, m.version, m.name, v, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("store %s: commit migration %s, the store stays at schema version %d: %w", s.path, m.name, v, err)
	}
	return false, nil
}
