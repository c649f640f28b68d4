package daemon

import (
	"banger/internal/atomicfile"
	"banger/internal/daemon/workspace"
	"io"
	"os"
	"strings"

	"banger/internal/daemon/consolelog"
)

// keepConsole keeps the end of a failed start's console log (at most
// consolelog.DefaultMax bytes) in the VM's directory, and returns what the
// error says of it: where it is and its last lines, sanitized.
func (vm *vmManager) keepConsole(id, path string) string {
	kept := vm.ws.Path(id, workspace.FailedConsoleName)
	if err := copyTail(path, kept, consolelog.DefaultMax); err != nil {
		vm.log.Warn("keep the console log of a failed start", "from", path, "error", err)
		kept = ""
	}
	return tailOf(kept)
}

// copyTail writes the last limit bytes of src to dst, atomically.
func copyTail(src, dst string, limit int64) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	off := max(fi.Size()-limit, 0)
	_, err = atomicfile.WriteFrom(dst, io.NewSectionReader(in, off, limit), atomicfile.Mode(0o600), atomicfile.NoSync())
	return err
}

// tailOf ends an error with where a console log is and its last lines,
// read from a bounded end of the file and stripped of control sequences.
func tailOf(path string) string {
	if path == "" {
		return ""
	}
	lines := consolelog.Tail(path, 15)
	if len(lines) == 0 {
		return "; the console log is " + path + " (empty)"
	}
	return "; the console log is " + path + "\n\nlast lines of the console:\n  " + strings.Join(lines, "\n  ")
}
