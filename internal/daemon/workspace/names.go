package workspace

import "path/filepath"

// The files of a VM's directory. The workspace owns these names; the
// daemon asks for paths, never spells them.
const (
	// RootDiskName is the root disk: a reflink clone or sparse copy of
	// the image's rootfs.
	RootDiskName = "root.ext4"
	// RootCOWName is the copy-on-write store of a dm snapshot root.
	RootCOWName = "root.cow"
	// WorkDiskName is the second disk, seeded from the image's work-seed.
	WorkDiskName = "work.ext4"
	// KnownHostsName holds the guest's SSH host keys as NAME.banger.
	KnownHostsName = "known_hosts"
	// FailedConsoleName keeps the end of a failed start's console log,
	// since its run dir is removed.
	FailedConsoleName = "console-failed-start.log"
)

// Path is the file called name in VM id's directory.
func (m *Manager) Path(id, name string) string { return filepath.Join(m.Dir(id), name) }
