package boot

import (
	"bytes"
	"os"
	"syscall"

	"banger/internal/atomicfile"
)

// writeFileAtomic replaces path with data through atomicfile: it writes a
// temporary file in the same directory and renames it over path, so a
// reader sees the old or the new file, never half of one. A symlink at
// path is replaced by the file, not followed. When path already is a
// regular file with exactly this content and mode, nothing is written and
// changed is false. uid and gid set the owner unless they are -1.
//
// Nothing is flushed to disk: ext4, which every banger image uses, writes
// a file renamed over an existing one before the rename itself
// (auto_da_alloc), so a crash leaves the old file or the new one, never an
// empty one; this matters for authorized_keys and /etc/hosts, which keep
// lines the user added. The files made from the kernel command line alone
// are written again at the next boot anyway, and the agent's poweroff
// syncs. Under software emulation each flush costs tens of
// milliseconds of boot time.
func writeFileAtomic(path string, data []byte, perm os.FileMode, uid, gid int) (changed bool, err error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm() == perm && ownedBy(fi, uid, gid) {
		if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
			return false, nil
		}
	}
	opts := []atomicfile.Option{atomicfile.Mode(perm), atomicfile.NoSync()}
	if uid != -1 || gid != -1 {
		opts = append(opts, atomicfile.Owner(uid, gid))
	}
	if err := atomicfile.WriteFile(path, data, opts...); err != nil {
		return false, err
	}
	return true, nil
}

// ownedBy reports whether fi belongs to uid and gid (-1 matches anything).
func ownedBy(fi os.FileInfo, uid, gid int) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return uid == -1 && gid == -1
	}
	return (uid == -1 || int(st.Uid) == uid) && (gid == -1 || int(st.Gid) == gid)
}
