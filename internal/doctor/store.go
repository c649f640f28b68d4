package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"banger/internal/store"
)

// orphanPrefix is workspace.OrphanPrefix (a test keeps them equal): the
// name bangerd gives a VM directory that its store had no row for.
const orphanPrefix = ".orphaned-"

// storeFix says how to get out of a store that does not belong to its
// state dir.
const storeFix = "put the right banger.db back (a backup: banger.db.bak-vN beside it), or, to go on with this store, stop bangerd and start it once with `bangerd --adopt-store` (VM directories it has no row for are moved aside, never deleted)"

// checkStore opens the store read-only, runs SQLite's quick check on it and
// compares the state dir id it records with the state dir's.
func checkStore(ctx context.Context, stateDir string) Result {
	const name = "store"
	path := filepath.Join(stateDir, "banger.db")
	in, err := store.Inspect(ctx, path)
	var ce *store.CorruptError
	switch {
	case errors.As(err, &ce):
		return fail(name, "stop bangerd, move banger.db (with its -wal and -shm files) aside and restore a backup, or start bangerd once with `--adopt-store` to begin with an empty store", "%v", err)
	case errors.Is(err, fs.ErrPermission) || (err != nil && strings.Contains(err.Error(), "unable to open")):
		return warn(name, "run `banger doctor` as the user bangerd runs as", "cannot read %s: %v", path, err)
	case err != nil:
		return warn(name, "see `banger daemon logs`", "cannot read %s: %v", path, err)
	}
	fileID, idErr := store.ReadStateID(stateDir)
	data, _ := store.StateDirData(stateDir)
	switch {
	case idErr != nil:
		return fail(name, storeFix, "%v", idErr)
	case !in.Exists || (!in.Rows && in.StateID == ""):
		if data != "" {
			what := "is empty"
			if !in.Exists {
				what = "is missing"
			}
			return fail(name, storeFix, "%s %s, but the state dir holds VMs or images (%s): bangerd refuses to start rather than take them for garbage", path, what, data)
		}
		if !in.Exists {
			return ok(name, "no store yet at %s: bangerd makes it on its first start", path)
		}
	case in.StateID != "" && fileID != in.StateID:
		has := "has no " + store.StateIDFile + " file"
		if fileID != "" {
			has = "says " + fileID
		}
		return fail(name, storeFix, "%s records state dir id %s, but the state dir %s: it is another state dir's store, and bangerd refuses to start", path, in.StateID, has)
	}
	if in.Version > store.SchemaVersion {
		return fail(name, "install a newer banger, or set state_dir to another directory", "%s has schema version %d, newer than this banger's %d", path, in.Version, store.SchemaVersion)
	}
	fi, err := os.Stat(path)
	if err == nil && fi.Mode().Perm()&0o077 != 0 {
		return warn(name, fmt.Sprintf("chmod 600 %s", path), "%s has mode %04o: other users may read it (banger leaves your modes alone)", path, fi.Mode().Perm())
	}
	tie := "tied to its state dir"
	if in.StateID == "" {
		tie = "bangerd ties it to its state dir at its next start"
	}
	return ok(name, "%s: schema version %d, quick check ok, %s; %d backup(s) beside it", path, in.Version, tie, len(store.Backups(path)))
}

// checkOrphans lists the VM directories bangerd moved aside because its
// store had no row for them.
func checkOrphans(stateDir string) Result {
	const name = "orphaned-vms"
	root := filepath.Join(stateDir, "vms")
	ents, err := os.ReadDir(root)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return warn(name, "run `banger doctor` as the user bangerd runs as", "cannot list %s: %v", root, err)
	}
	var found []string
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), orphanPrefix) {
			found = append(found, filepath.Join(root, e.Name()))
		}
	}
	if len(found) == 0 {
		return ok(name, "no VM directories were moved aside")
	}
	return warn(name,
		"each holds a VM's disks (root.ext4 or root.cow, work.ext4). If the store was swapped by mistake, stop bangerd, put the right banger.db back and move the directory back to vms/<id> (the id is in its name). To keep a VM's files, copy them out, or register its root disk as an image (banger image register --name NAME --rootfs DIR/root.ext4 --kernel KERNEL) and create a VM from it. To delete one: rm -r DIR",
		"%d VM director%s moved aside because the store had no row for them (a store emptied, restored from an older backup, or adopted): %s",
		len(found), map[bool]string{true: "y was", false: "ies were"}[len(found) == 1], strings.Join(found, ", "))
}

// checkSnapshots counts the VM snapshots under the state dir and the disk
// they take (allocated blocks: a sparse memory state counts what it
// holds; files shared with a reflink are counted in full).
func checkSnapshots(stateDir string) Result {
	const name = "snapshots"
	root := filepath.Join(stateDir, "snapshots")
	ents, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return ok(name, "no snapshots")
	}
	if err != nil {
		return warn(name, "run `banger doctor` as the user bangerd runs as", "cannot list %s: %v", root, err)
	}
	var n int
	var bytes int64
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		n++
		_ = filepath.WalkDir(filepath.Join(root, e.Name()), func(_ string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			if fi, err := d.Info(); err == nil {
				if st, ok := fi.Sys().(*syscall.Stat_t); ok {
					bytes += st.Blocks * 512
				}
			}
			return nil
		})
	}
	if n == 0 {
		return ok(name, "no snapshots")
	}
	return ok(name, "%d snapshot%s in %s, %s on disk (banger snapshot ls; banger snapshot rm NAME frees one)",
		n, map[bool]string{true: "", false: "s"}[n == 1], root, humanBytes(bytes))
}

// humanBytes renders n in binary units.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
