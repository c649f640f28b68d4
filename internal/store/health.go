package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"banger/internal/atomicfile"

	"golang.org/x/sys/unix"
)

// NotWritableError is returned by Open when the store file, or the directory
// that holds it, cannot be written by the daemon's user. Nothing is changed:
// banger never alters the modes of files it did not just create.
type NotWritableError struct {
	Path  string      // the file or directory that cannot be written
	Dir   bool        // Path is the state dir, not the file
	UID   int         // who tried
	Mode  fs.FileMode // Path's permission bits
	Owner int         // Path's owner, -1 when unknown
	Err   error       // what access(2) said
}

func (e *NotWritableError) Error() string {
	if errors.Is(e.Err, unix.EROFS) {
		return fmt.Sprintf("store %s is on a read-only file system: remount it read-write, or set state_dir to a writable directory", e.Path)
	}
	what, fix := "store", fmt.Sprintf("make it writable for that user (chmod u+w %s, or chown it), or run bangerd as its owner", e.Path)
	if e.Dir {
		what = "state dir"
		fix = "SQLite writes banger.db-wal and banger.db-shm beside the store: make the directory writable for that user, or set state_dir to another directory"
	}
	owner := "an unknown owner"
	if e.Owner >= 0 {
		owner = "uid " + userName(e.Owner)
	}
	extra := ""
	if errors.Is(e.Err, unix.EPERM) {
		extra = " and is locked against writes (immutable? see lsattr)"
	}
	return fmt.Sprintf("%s %s is not writable by uid %s: it has mode %04o, owned by %s%s; %s. banger does not change the modes of your files",
		what, e.Path, userName(e.UID), e.Mode.Perm(), owner, extra, fix)
}

// Unwrap gives the access(2) error.
func (e *NotWritableError) Unwrap() error { return e.Err }

// userName is "1000 (ana)", or "1000" when the name is unknown.
func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil && u.Username != "" {
		return fmt.Sprintf("%d (%s)", uid, u.Username)
	}
	return strconv.Itoa(uid)
}

// checkWritable checks, with access(2), that the directory of the store and
// the store itself (when it exists) can be written by this process.
func checkWritable(path string) error {
	for _, p := range []string{filepath.Dir(path), path} {
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) && p == path {
			return nil
		}
		if err != nil {
			return fmt.Errorf("store %s: %w", path, err)
		}
		if err := unix.Access(p, unix.W_OK); err != nil {
			owner := -1
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				owner = int(st.Uid)
			}
			return &NotWritableError{Path: p, Dir: p != path, UID: os.Geteuid(), Mode: fi.Mode(), Owner: owner, Err: err}
		}
	}
	return nil
}

// CorruptError is returned by Open (and Inspect) when the store file is
// damaged or not a database at all. The file is left as it is.
type CorruptError struct {
	Path    string
	Detail  string   // what SQLite found
	Backups []string // backups beside it, newest first
}

func (e *CorruptError) Error() string {
	restore := "there is no backup beside it (banger makes one before each schema upgrade, as " + filepath.Base(e.Path) + ".bak-vN)"
	if len(e.Backups) > 0 {
		restore = "restore the newest backup (cp " + e.Backups[0] + " " + e.Path + "; backups: " + strings.Join(e.Backups, ", ") + ")"
	}
	return fmt.Sprintf("store %s is damaged (%s): stop bangerd, move the file aside (with its -wal and -shm files) and %s; or start over with an empty store by moving it aside and starting bangerd once with --adopt-store (VM directories the new store does not know are then moved aside, never deleted)",
		e.Path, e.Detail, restore)
}

// quickCheck runs PRAGMA quick_check: a pass over every page and index that
// finds damage at open instead of query by query.
func quickCheck(ctx context.Context, db *sql.DB, path string) error {
	rows, err := db.QueryContext(ctx, `PRAGMA quick_check(5)`)
	if err != nil {
		return &CorruptError{Path: path, Detail: "quick_check: " + err.Error(), Backups: Backups(path)}
	}
	defer rows.Close()
	var found []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return &CorruptError{Path: path, Detail: "quick_check: " + err.Error(), Backups: Backups(path)}
		}
		if line != "ok" {
			found = append(found, line)
		}
	}
	if err := rows.Err(); err != nil {
		found = append(found, err.Error())
	}
	if len(found) > 0 {
		detail := strings.Join(strings.Fields(strings.Join(found, " ")), " ")
		return &CorruptError{Path: path, Detail: "quick_check: " + detail, Backups: Backups(path)}
	}
	return nil
}

// ErrFileChanged is wrapped by CheckFile's errors.
var ErrFileChanged = errors.New("the store file changed under the daemon")

// fileID returns the device and inode of path.
func fileID(path string) (dev, ino uint64, err error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, 0, err
	}
	return st.Dev, st.Ino, nil
}

// CheckFile reports whether the store's path still names the file that Open
// opened. A store deleted or replaced under a running daemon would otherwise
// go on being written to a file nobody will ever read again, and the next
// start would find an empty or foreign store.
func (s *Store) CheckFile() error {
	dev, ino, err := fileID(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("store %s was deleted while bangerd ran: %w", s.path, ErrFileChanged)
	}
	if err != nil {
		return fmt.Errorf("store %s: %w", s.path, err)
	}
	if dev != s.dev || ino != s.ino {
		return fmt.Errorf("store %s was replaced by another file while bangerd ran: %w", s.path, ErrFileChanged)
	}
	return nil
}

// keepBackups is how many pre-migration backups are kept; older ones are
// deleted when a new one is made.
const keepBackups = 3

// backupSuffix is what a backup's name adds to the store's:
// banger.db.bak-v4 is the store as it was at schema version 4.
const backupSuffix = ".bak-v"

// Backups returns the pre-migration backups of the store at path, newest
// (highest schema version) first.
func Backups(path string) []string {
	ents, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		return nil
	}
	type bak struct {
		v    int
		path string
	}
	var bs []bak
	prefix := filepath.Base(path) + backupSuffix
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok || !e.Type().IsRegular() {
			continue
		}
		if v, err := strconv.Atoi(rest); err == nil && v > 0 {
			bs = append(bs, bak{v, filepath.Join(filepath.Dir(path), e.Name())})
		}
	}
	slices.SortFunc(bs, func(a, b bak) int { return b.v - a.v })
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.path
	}
	return out
}

// backup writes a consistent copy of the store at schema version v to
// <path>.bak-v<v> before a migration, atomically (VACUUM INTO a new 0600
// file, fsync, rename), and keeps only the newest keepBackups.
func (s *Store) backup(ctx context.Context, v int) error {
	dst := s.path + backupSuffix + strconv.Itoa(v)
	f, err := atomicfile.Create(dst, atomicfile.Mode(0o600))
	if err != nil {
		return fmt.Errorf("store %s: back up before upgrading: %w (nothing was changed)", s.path, err)
	}
	defer f.Cleanup()
	fail := func(err error) error {
		return fmt.Errorf("store %s: back up to %s before upgrading: %w (nothing was changed; free space in the state dir and retry)", s.path, dst, err)
	}
	// VACUUM INTO writes the empty temporary file by name; Commit flushes
	// it through the descriptor Create holds, then renames it into place.
	if _, err := s.db.ExecContext(ctx, `VACUUM INTO ?`, f.Name()); err != nil {
		return fail(err)
	}
	if err := f.Commit(); err != nil {
		return fail(err)
	}
	if bs := Backups(s.path); len(bs) > keepBackups {
		for _, old := range bs[keepBackups:] {
			_ = os.Remove(old)
		}
	}
	return nil
}
