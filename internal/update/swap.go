package update

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// JournalFile, in the install's directory, records the update under way or
// the last one done, so that an interrupted update is noticed and
// `banger update --rollback` knows which version the .prev binaries are.
const JournalFile = ".banger-update.json"

// stagePrefix names the staging directories made inside the install's
// directory (same filesystem, so that the swap is a rename).
const stagePrefix = ".banger-update-"

// Journal states, in the order an update moves through them.
const (
	StateLinking     = "linking"      // making the .prev links; every binary is still the old one
	StateSwapping    = "swapping"     // every .prev is the old version; binaries are being renamed over
	StateSwapped     = "swapped"      // every binary is the new one; restarts under way
	StateDone        = "done"         // the new version runs
	StateRollingBack = "rolling-back" // .prev files are being renamed back
	StateRestored    = "restored"     // the old binaries are back (no .prev left), not yet brought up
	StateRolledBack  = "rolled-back"  // the old binaries are back and were brought up
)

// UnderWay reports whether the journal is at a step between the first
// change an update or a rollback makes and its end (or its interruption):
// a bangerd started from the install then could meet a helper of another
// build.
func (j Journal) UnderWay() bool {
	switch j.State {
	case StateLinking, StateSwapping, StateSwapped, StateRollingBack, StateRestored:
		return true
	}
	return false
}

// Interrupted returns an error when an earlier update or rollback stopped
// half way, saying how to finish it; a new update must not start over it,
// because its .prev links would replace the only copies of the old version.
func (in *Install) Interrupted() error {
	j, err := in.ReadJournal()
	if err != nil {
		return err
	}
	switch j.State {
	case StateSwapping:
		return refused("an earlier update from %s to %s was interrupted (%s): run `banger update --rollback` to put %s back, then update again", orUnknown(j.From), j.To, j.State, orUnknown(j.From))
	case StateSwapped:
		return refused("an earlier update from %s to %s was interrupted after its binaries were replaced: run `banger update` to bring %s up, or `banger update --rollback` to put %s back", orUnknown(j.From), j.To, j.To, orUnknown(j.From))
	case StateRollingBack:
		return refused("an earlier rollback to %s was interrupted: run `banger update --rollback` again to finish it", orUnknown(j.From))
	}
	return nil
}

func orUnknown(v string) string {
	if v == "" {
		return "the previous version"
	}
	return v
}

// Stage makes a private (0700) directory inside the install's directory for
// the new files, after removing those an interrupted update left. Call it
// with the lock held; the caller removes the directory when done.
func (in *Install) Stage() (string, error) {
	if old, err := filepath.Glob(filepath.Join(in.Dir, stagePrefix+"*")); err == nil {
		for _, o := range old {
			// Only a directory an update can have made: another user's
			// (in a shared directory) is left alone.
			if fi, err := os.Lstat(o); err == nil && fi.IsDir() && in.ownedByUpdater(fi) {
				_ = os.RemoveAll(o)
			}
		}
	}
	dir, err := os.MkdirTemp(in.Dir, stagePrefix)
	if err != nil {
		return "", fmt.Errorf("make a staging directory in %s: %w", in.Dir, err)
	}
	return dir, nil
}

// Swap replaces each binary of the install by the staged file of the same
// name (staged maps a name of Binaries to a path in the install's
// filesystem, normally inside Stage's directory), keeping the old one as
// <name>.prev. Every .prev is made (a hard link, or a copy where a link is
// refused) before the first rename, so the .prev files are always one
// version; each rename is atomic, so there is never a moment without a
// binary. The journal records each step. On error the caller runs
// RestorePrev.
func (in *Install) Swap(staged map[string]string, from, to string) error {
	if err := in.prepareSwap(staged, from, to); err != nil {
		return &notSwappedError{err}
	}
	for _, name := range Binaries {
		if err := rename(staged[name], in.Path(name)); err != nil {
			return fmt.Errorf("put the new %s in place: %w", name, err)
		}
	}
	if err := syncDir(in.Dir); err != nil {
		return err
	}
	return in.writeJournal(Journal{From: from, To: to, State: StateSwapped})
}

// prepareSwap checks and prepares the staged files, makes every .prev and
// journals StateSwapping: everything before the first binary is replaced.
func (in *Install) prepareSwap(staged map[string]string, from, to string) error {
	for _, name := range Binaries {
		fi, err := os.Lstat(staged[name])
		if err != nil || !fi.Mode().IsRegular() {
			return fmt.Errorf("the staged %s is missing or not a regular file (%q)", name, staged[name])
		}
	}
	for _, name := range Binaries {
		if err := in.likeLive(name, staged[name]); err != nil {
			return err
		}
	}
	if err := in.writeJournal(Journal{From: from, To: to, State: StateLinking}); err != nil {
		return err
	}
	for _, name := range Binaries {
		if err := keepPrev(in.Path(name), in.Prev(name)); err != nil {
			return err
		}
	}
	if err := syncDir(in.Dir); err != nil {
		return err
	}
	return in.writeJournal(Journal{From: from, To: to, State: StateSwapping})
}

// notSwappedError is a Swap that failed before it replaced any binary.
type notSwappedError struct{ error }

func (e *notSwappedError) Unwrap() error { return e.error }

// likeLive gives the staged file the owner and group of the binary it
// will replace (root updating a user's install, through sudo, must not
// leave root's files there, which that user could not update next time)
// and makes it executable, before anything in the install changes.
func (in *Install) likeLive(name, staged string) error {
	fi, err := os.Lstat(in.Path(name))
	if err != nil {
		return fmt.Errorf("inspect %s: %w", in.Path(name), err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 {
		if err := os.Lchown(staged, int(st.Uid), int(st.Gid)); err != nil {
			return fmt.Errorf("give the new %s the owner of the installed one: %w", name, err)
		}
	}
	if err := os.Chmod(staged, 0o755); err != nil {
		return fmt.Errorf("make the new %s executable: %w", name, err)
	}
	return nil
}

// rename is os.Rename; tests replace it to fail a swap half way.
var rename = os.Rename

// MarkDone records that the new version runs.
func (in *Install) MarkDone(from, to string) error {
	return in.writeJournal(Journal{From: from, To: to, State: StateDone})
}

// keepPrev makes prev the same file as path: a hard link made under a
// temporary name and renamed over prev, or a copy when the link is refused.
func keepPrev(path, prev string) error {
	tmp := prev + ".tmp"
	_ = os.Remove(tmp)
	if err := os.Link(path, tmp); err != nil {
		if err := copyFile(path, tmp); err != nil {
			_ = os.Remove(tmp)
			return fmt.Errorf("keep %s as %s: %w", path, prev, err)
		}
	}
	if err := os.Rename(tmp, prev); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("keep %s as %s: %w", path, prev, err)
	}
	// rename(2) of a link onto another link of the same file (a .prev
	// made by an update interrupted while linking) does nothing and
	// leaves tmp: remove it.
	_ = os.Remove(tmp)
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fi.Mode().Perm())
	if err != nil {
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 {
		// Root copying a user's binary keeps it theirs: put back by a
		// rollback, it must not become root's.
		if err := out.Chown(int(st.Uid), int(st.Gid)); err != nil {
			out.Close()
			return err
		}
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("flush %s: %w", dir, err)
	}
	return nil
}

// HasPrev reports whether every binary has a .prev.
func (in *Install) HasPrev() bool {
	for _, name := range Binaries {
		if _, err := os.Lstat(in.Prev(name)); err != nil {
			return false
		}
	}
	return true
}

// RestorePrev renames each <name>.prev back over <name> and returns the
// version they are ("" when the journal does not say); the journal then
// says StateRestored until MarkRolledBack. It refuses when
// there is nothing to restore. A rollback interrupted half way is finished
// by running it again: a binary whose .prev is gone was already restored.
func (in *Install) RestorePrev() (string, error) {
	j, err := in.ReadJournal()
	if err != nil {
		return "", err
	}
	switch j.State {
	case StateLinking:
		return "", refused("the interrupted update to %s had not replaced any binary yet, so there is nothing to roll back; run `banger update` again", j.To)
	case StateRolledBack, StateRestored:
		if !in.HasPrev() {
			return "", refused("the binaries in %s were already rolled back to %s, and no older .prev is kept", in.Dir, orUnknown(j.From))
		}
	}
	var missing []string
	for _, name := range Binaries {
		fi, err := os.Lstat(in.Prev(name))
		if err != nil {
			missing = append(missing, in.Prev(name))
			continue
		}
		// Never rename a planted link or another user's file over a
		// binary: only a regular file an update can have made.
		if err := in.madeByUpdate(in.Prev(name), fi, uidOf(in.Path(name))); err != nil {
			return "", err
		}
		// Only a swap cut short leaves a .prev that is still the live
		// file; otherwise it holds no previous version at all.
		if cur, err := os.Lstat(in.Path(name)); err == nil && os.SameFile(fi, cur) && j.State != StateSwapping && j.State != StateRollingBack {
			return "", refused("%s is the same file as %s (the journal says %q), so it holds no previous version: remove it, or reinstall the version you want with install.sh (`--version vX.Y.Z`)", in.Prev(name), in.Path(name), j.State)
		}
	}
	if len(missing) > 0 && j.State != StateRollingBack {
		if len(missing) == len(Binaries) {
			return "", refused("no previous version is kept in %s (no .prev files): nothing to roll back to", in.Dir)
		}
		return "", refused("%s missing: the previous version is not whole, so it is not put back; for a known state, reinstall the version you want with install.sh (`--version vX.Y.Z`), then remove %s", strings.Join(missing, " and "), in.Path(JournalFile))
	}
	j.State = StateRollingBack
	if err := in.writeJournal(j); err != nil {
		return "", err
	}
	for _, name := range Binaries {
		prev := in.Prev(name)
		pfi, err := os.Lstat(prev)
		if errors.Is(err, fs.ErrNotExist) {
			continue // restored by the rollback that was interrupted
		}
		if cfi, err := os.Lstat(in.Path(name)); err == nil && pfi != nil && os.SameFile(pfi, cfi) {
			// Never replaced (the swap stopped before it): both names are
			// one file, and rename(2) of a file over itself does nothing.
			if err := os.Remove(prev); err != nil {
				return "", fmt.Errorf("remove %s: %w", prev, err)
			}
			continue
		}
		if err := rename(prev, in.Path(name)); err != nil {
			return "", fmt.Errorf("put %s back as %s: %w", prev, in.Path(name), err)
		}
	}
	if err := syncDir(in.Dir); err != nil {
		return "", err
	}
	j.State = StateRestored
	return j.From, in.writeJournal(j)
}

// MarkRolledBack records that the binaries RestorePrev put back were
// brought up (or, after a swap that failed, had never stopped running).
func (in *Install) MarkRolledBack() error {
	j, err := in.ReadJournal()
	if err != nil {
		return err
	}
	if j.State != StateRestored {
		return fmt.Errorf("the update journal in %s says %q, not %q", in.Dir, j.State, StateRestored)
	}
	j.State = StateRolledBack
	return in.writeJournal(j)
}

// uidOf is the owner of path (not followed), or -1.
func uidOf(path string) int {
	fi, err := os.Lstat(path)
	if err != nil {
		return -1
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid)
	}
	return -1
}
