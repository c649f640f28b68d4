package netmgr

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"

	"banger/internal/atomicfile"
)

// The markers of the block banger manages in a hosts file.
const (
	HostsBegin = "# BEGIN banger"
	HostsEnd   = "# END banger"
	// HostsDomain is appended to VM names in the hosts file.
	HostsDomain = "banger"
)

const hostsNote = "# Managed by banger: running VMs as NAME." + HostsDomain + ". Edits here are overwritten."

// UpdateHosts makes the banger block of the hosts file at path list
// entries, VM name to address, as "ADDR<TAB>NAME.banger" sorted by name.
// Everything outside the block is kept byte for byte. No entries removes
// the block. The file is replaced atomically (temporary file beside it,
// then rename) keeping its mode and owner, and left untouched when nothing
// changes. A missing file is created. Bad input or a damaged block (a
// marker without its partner, or two blocks) changes nothing.
func UpdateHosts(path string, entries map[string]netip.Addr) error {
	old, err := os.ReadFile(path)
	mode := fs.FileMode(0o644)
	uid, gid := -1, -1
	switch {
	case errors.Is(err, fs.ErrNotExist):
		old = nil
	case err != nil:
		return fmt.Errorf("netmgr: cannot read hosts file %s: %w", path, err)
	default:
		if fi, err := os.Stat(path); err == nil {
			mode = fi.Mode().Perm()
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				uid, gid = int(st.Uid), int(st.Gid)
			}
		}
	}
	updated, err := rewriteHosts(old, entries)
	if err != nil {
		return fmt.Errorf("netmgr: cannot update hosts file %s: %w", path, err)
	}
	if bytes.Equal(updated, old) && old != nil {
		return nil
	}
	if old == nil && len(entries) == 0 {
		return nil
	}
	return writeAtomic(path, updated, mode, uid, gid)
}

// rewriteHosts returns content with its banger block replaced by one for
// entries (removed when entries is empty; appended when there was none).
func rewriteHosts(content []byte, entries map[string]netip.Addr) ([]byte, error) {
	names := make([]string, 0, len(entries))
	for name, a := range entries {
		if err := checkHostLabel(name); err != nil {
			return nil, err
		}
		if !a.IsValid() || a.Zone() != "" {
			return nil, fmt.Errorf("VM %q has no usable address (%v)", name, a)
		}
		names = append(names, name)
	}
	slices.Sort(names)

	lines := strings.SplitAfter(string(content), "\n")
	if len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	begin, end := -1, -1
	for i, l := range lines {
		switch strings.TrimSpace(l) {
		case HostsBegin:
			if begin >= 0 {
				return nil, fmt.Errorf("it has two %q lines; remove the extra banger block by hand", HostsBegin)
			}
			begin = i
		case HostsEnd:
			if begin < 0 || end >= 0 {
				return nil, fmt.Errorf("line %d is %q without a block to end; fix the banger block by hand", i+1, HostsEnd)
			}
			end = i
		}
	}
	if begin >= 0 && end < 0 {
		return nil, fmt.Errorf("line %d is %q with no %q after it; fix the banger block by hand", begin+1, HostsBegin, HostsEnd)
	}

	var block strings.Builder
	if len(names) > 0 {
		block.WriteString(HostsBegin + "\n" + hostsNote + "\n")
		for _, n := range names {
			fmt.Fprintf(&block, "%s\t%s.%s\n", entries[n].Unmap(), n, HostsDomain)
		}
		block.WriteString(HostsEnd + "\n")
	}

	var out strings.Builder
	if begin >= 0 {
		for _, l := range lines[:begin] {
			out.WriteString(l)
		}
		out.WriteString(block.String())
		for _, l := range lines[end+1:] {
			out.WriteString(l)
		}
		return []byte(out.String()), nil
	}
	out.Write(content)
	if block.Len() > 0 {
		if len(content) > 0 && content[len(content)-1] != '\n' {
			out.WriteByte('\n')
		}
		out.WriteString(block.String())
	}
	return []byte(out.String()), nil
}

// checkHostLabel accepts a VM name that is one DNS label: 1 to 63 of a-z,
// 0-9 and '-', not starting or ending with '-'.
func checkHostLabel(name string) error {
	if name == "" || len(name) > 63 || name[0] == '-' || name[len(name)-1] == '-' {
		return fmt.Errorf("VM name %q is not a DNS label (1 to 63 of a-z, 0-9, '-', no '-' at either end)", name)
	}
	for _, r := range name {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
			return fmt.Errorf("VM name %q is not a DNS label (1 to 63 of a-z, 0-9, '-', no '-' at either end)", name)
		}
	}
	return nil
}

// writeAtomic replaces path with data, flushed, with the given mode and
// owner (uid < 0 keeps the writer's).
func writeAtomic(path string, data []byte, mode fs.FileMode, uid, gid int) error {
	opts := []atomicfile.Option{atomicfile.Mode(mode)}
	if uid >= 0 && (uid != os.Getuid() || gid != os.Getgid()) {
		opts = append(opts, atomicfile.Owner(uid, gid))
	}
	err := atomicfile.WriteFile(path, data, opts...)
	if errors.Is(err, syscall.EBUSY) {
		return fmt.Errorf("netmgr: %w (a bind-mounted file cannot be renamed over)", err)
	}
	if err != nil {
		return fmt.Errorf("netmgr: %w", err)
	}
	return nil
}
