package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"modernc.org/sqlite" // also registers the "sqlite" database/sql driver
	sqlite3 "modernc.org/sqlite/lib"
)

// ErrNotFound is returned (wrapped, with what was looked for) when a row does
// not exist.
var ErrNotFound = errors.New("not found")

// busyTimeoutMillis is how long a statement waits for another connection or
// process holding the write lock before it gives up with SQLITE_BUSY.
const busyTimeoutMillis = 5000

// TooNewError is returned by Open when the store was written by a newer banger
// than this one. The file is left untouched.
type TooNewError struct {
	Path  string // the database file
	Found int    // schema version recorded in the file
	Known int    // newest schema version this binary understands
}

func (e *TooNewError) Error() string {
	return fmt.Sprintf("store %s has schema version %d, but this banger understands versions up to %d: install a newer banger, or set state_dir to another directory",
		e.Path, e.Found, e.Known)
}

// Store is banger's state database. It is safe for concurrent use by many
// goroutines.
type Store struct {
	db   *sql.DB
	path string
	// dev and ino identify the file opened, so CheckFile can tell when the
	// path no longer names it (deleted or replaced under the daemon).
	dev, ino uint64
}

// Open opens (creating if needed) the store at path, a file such as
// <state_dir>/banger.db, checks it (PRAGMA quick_check) and migrates it to
// SchemaVersion, backing it up first (see Backups). The parent directory is
// created with mode 0700 and a new file with mode 0600; the mode of an
// existing file is never changed. A store newer than this binary gives a
// *TooNewError, one that cannot be written a *NotWritableError and a damaged
// one a *CorruptError; none of them is modified.
func Open(ctx context.Context, path string) (*Store, error) {
	migs, err := embeddedMigrations()
	if err != nil {
		return nil, fmt.Errorf("store: embedded migrations are broken (a bug in this banger build): %w", err)
	}
	return openWith(ctx, path, migs)
}

// openWith is Open with an explicit migration list; tests use it to build a
// store at an older version, or with a deliberately broken migration.
func openWith(ctx context.Context, path string, migs []migration) (*Store, error) {
	if path == "" {
		return nil, errors.New("store: no database path given: set state_dir in the config")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("store %s: resolve path: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("store %s: create state directory: %w (check that state_dir is writable)", abs, err)
	}
	if err := createIfMissing(abs); err != nil {
		return nil, err
	}
	if err := checkWritable(abs); err != nil {
		return nil, err
	}
	dev, ino, err := fileID(abs)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", abs, err)
	}

	db, err := sql.Open("sqlite", dsn(abs, "rw"))
	if err != nil {
		return nil, fmt.Errorf("store %s: open: %w", abs, err)
	}
	s := &Store{db: db, path: abs, dev: dev, ino: ino}
	if err := s.init(ctx, migs); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// init checks the version and the file's integrity, switches to WAL, backs
// the file up when a migration is due, and migrates. It reads before it
// writes anything, so a too-new, damaged or foreign file is left as it was.
func (s *Store) init(ctx context.Context, migs []migration) error {
	v, err := readVersion(ctx, s.db)
	if err != nil {
		return s.readError(err)
	}
	if err := quickCheck(ctx, s.db, s.path); err != nil {
		return err
	}
	if v > len(migs) {
		return &TooNewError{Path: s.path, Found: v, Known: len(migs)}
	}
	if err := s.enableWAL(ctx); err != nil {
		return err
	}
	if v > 0 && v < len(migs) {
		if err := s.backup(ctx, v); err != nil {
			return err
		}
	}
	return s.migrate(ctx, migs)
}

// readError explains why the first read of the store failed.
func (s *Store) readError(err error) error {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_NOTADB:
			return &CorruptError{Path: s.path, Detail: "it is not an SQLite database", Backups: Backups(s.path)}
		case sqlite3.SQLITE_CORRUPT:
			return &CorruptError{Path: s.path, Detail: err.Error(), Backups: Backups(s.path)}
		case sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM:
			if werr := checkWritable(s.path); werr != nil {
				return werr
			}
		}
	}
	return fmt.Errorf("store %s: read schema version: %w", s.path, err)
}

// enableWAL switches the file to WAL journal mode. The mode is persistent in
// the file, so every later connection (of this pool or of another process)
// uses it too. Changing the mode needs an exclusive lock and SQLite may refuse
// it with SQLITE_BUSY without waiting, e.g. while another process is opening
// the same fresh store, so busy refusals are retried up to the busy timeout.
func (s *Store) enableWAL(ctx context.Context) error {
	var mode string
	if err := s.db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err == nil && mode == "wal" {
		return nil
	}
	deadline := time.Now().Add(busyTimeoutMillis * time.Millisecond)
	delay := time.Millisecond
	for {
		err := s.db.QueryRowContext(ctx, `PRAGMA journal_mode = WAL`).Scan(&mode)
		if err == nil {
			break
		}
		if !isBusy(err) || time.Now().After(deadline) {
			return fmt.Errorf("store %s: switch to WAL journal mode: %w (if another banger is using this store, stop it and retry)", s.path, err)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("store %s: switch to WAL journal mode: %w", s.path, ctx.Err())
		case <-t.C:
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
	if mode != "wal" {
		return fmt.Errorf("store %s: the file system refused WAL journal mode (got %q): put state_dir on a local file system", s.path, mode)
	}
	return nil
}

// isBusy reports whether err is SQLite's SQLITE_BUSY (any extended form).
func isBusy(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_BUSY
}

// createIfMissing creates an empty database file with mode 0600, so the file
// is never readable by others, not even briefly. SQLite treats an empty file
// as an empty database.
func createIfMissing(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		fi, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("store %s: %w", path, err)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("store %s: not a regular file: move it away or set state_dir to another directory", path)
		}
		return nil
	}
	if err != nil {
		if werr := checkWritable(path); werr != nil {
			return werr
		}
		return fmt.Errorf("store %s: create database file: %w (check that state_dir is writable)", path, err)
	}
	return f.Close()
}

// dsn builds the connection string: an SQLite URI (so any path is safe once
// escaped), mode=rw (or ro) so SQLite never creates the file itself (createIfMissing
// does, with the right mode), per-connection pragmas, and BEGIN IMMEDIATE for
// transactions so that writers queue on the busy timeout instead of failing
// when a read lock cannot be upgraded.
func dsn(abs, mode string) string {
	u := url.URL{Scheme: "file", Path: abs}
	q := url.Values{}
	q.Set("mode", mode)
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeoutMillis))
	q.Add("_pragma", "foreign_keys(1)")
	q.Set("_txlock", "immediate")
	u.RawQuery = q.Encode()
	return u.String()
}

// Close closes the database; calls made after it fail.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store %s: close: %w", s.path, err)
	}
	return nil
}

// Path returns the absolute path of the database file.
func (s *Store) Path() string { return s.path }

// Version returns the schema version recorded in the store.
func (s *Store) Version(ctx context.Context) (int, error) {
	v, err := readVersion(ctx, s.db)
	if err != nil {
		return 0, fmt.Errorf("store %s: read schema version: %w", s.path, err)
	}
	return v, nil
}
