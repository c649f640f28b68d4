package initrd

// The layout of the initramfs, shared with the code that builds it.
const (
	// ModulesDir holds the modules, uncompressed, as <name>.ko.
	ModulesDir = "/lib/modules/banger"
	// ManifestPath lists the module files to load, one absolute path a
	// line, in load order. Blank lines and lines starting with '#' are
	// ignored.
	ManifestPath = "/etc/banger/modules.load"
	// NewRoot is where the root disk is mounted before switching to it.
	NewRoot = "/newroot"
	// RootAgent is where an image keeps the guest agent; when it is the
	// same build as /init, the initramfs lends it its own copy.
	RootAgent = "/usr/local/bin/banger-vsock-agent"
	// TestMarker is printed on the console after a successful switch when
	// the kernel command line has banger.initrd_test=1.
	TestMarker = "BANGER-INITRD: switch_root ok"
)
