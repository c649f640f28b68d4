// Package atomicfile replaces a file whole or not at all: it writes a
// temporary file beside the target and renames it over the target, so a
// reader, or the system after a crash, sees the old file or the new one,
// never half of one.
//
// The temporary file is created in the target's directory, named
// ".<base>.tmp-<random>", with O_EXCL|O_NOFOLLOW: a name that already
// exists, symlink or not, is never opened, and another name is tried.
// It gets the mode asked for (not the umask's), the owner when one is
// asked for, the data, an fsync, and is renamed over the target; a symlink
// at the target is replaced by the file, never written through. Then the
// directory is fsynced so that the rename itself survives a crash. On every
// failure the temporary file is removed and the target is left as it was.
//
// NoSync skips both flushes, the file's and the directory's: for files
// that are rebuilt anyway when lost (a guest's boot files, a console log's
// rotated copy, files in an image tree that is packed later), where a
// flush only costs time. Without flushes a crash can still only leave the
// old file or the new one on ext4, which writes a file renamed over
// another before the rename (auto_da_alloc), but on other file systems it
// may leave an empty file.
//
// Only the last element of the path is protected: the directories leading
// to it are resolved as usual, symlinks included. CreateIn and WriteFileIn
// take a name inside an os.Root instead, for trees that are not the
// writer's own: a link on the way may then lead only inside the root.
//
// The package uses the standard library and golang.org/x/sys/unix only, as
// it is linked into the static guest agent too.
package atomicfile
