package filekind

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// pseudoFS names the kernel pseudo-filesystems whose files look regular to
// stat but are views of kernel or process state, not data of the user's.
var pseudoFS = map[int64]string{
	unix.PROC_SUPER_MAGIC:    "proc",
	unix.SYSFS_MAGIC:         "sysfs",
	unix.DEBUGFS_MAGIC:       "debugfs",
	unix.TRACEFS_MAGIC:       "tracefs",
	unix.SECURITYFS_MAGIC:    "securityfs",
	unix.CGROUP_SUPER_MAGIC:  "cgroup",
	unix.CGROUP2_SUPER_MAGIC: "cgroup2",
	0x62656570:               "configfs",
	unix.EFIVARFS_MAGIC:      "efivarfs",
	unix.BPF_FS_MAGIC:        "bpf",
	unix.PSTOREFS_MAGIC:      "pstore",
}

// Open resolves every symlink in path, checks that what it names is a
// regular file on a real filesystem, and opens it for reading without
// blocking (a fifo swapped in between cannot hang the caller). It returns
// the open file, its resolved absolute path and its info. The error says
// what the file is when it is not a regular file.
func Open(path string) (*os.File, string, fs.FileInfo, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, "", nil, err
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return nil, "", nil, err
	}
	via := ""
	if real != abs {
		via = fmt.Sprintf(" (where %s leads)", abs)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return nil, "", nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, "", nil, fmt.Errorf("%s%s is %s, not a regular file", real, via, Describe(fi.Mode()))
	}
	fd, err := unix.Open(real, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, "", nil, &fs.PathError{Op: "open", Path: real, Err: err}
	}
	f := os.NewFile(uintptr(fd), real)
	ofi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, "", nil, err
	}
	if !ofi.Mode().IsRegular() || !os.SameFile(fi, ofi) {
		f.Close()
		return nil, "", nil, fmt.Errorf("%s%s changed while it was being checked; try again", real, via)
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		f.Close()
		return nil, "", nil, &fs.PathError{Op: "statfs", Path: real, Err: err}
	}
	if name, ok := pseudoFS[int64(st.Type)]; ok {
		f.Close()
		return nil, "", nil, fmt.Errorf("%s%s is a file of %s, a kernel pseudo-filesystem, not a file of data", real, via, name)
	}
	return f, real, ofi, nil
}

// Describe names a file type in words: "a directory", "a block device".
func Describe(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "a regular file"
	case m.IsDir():
		return "a directory"
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeNamedPipe != 0:
		return "a fifo"
	case m&fs.ModeSocket != 0:
		return "a socket"
	}
	return "a special file"
}
