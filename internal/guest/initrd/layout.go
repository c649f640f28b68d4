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
	// EarlyAgentFile is written when the initramfs started the image's
	// agent itself, before systemd ("banger-vsock-agent run": the boot
	// duties, serving meanwhile), so that the agent is ready before
	// systemd has loaded its units. It holds that agent's pid and start
	// time (EarlyAgentRecord), so that a later process of the same pid is
	// not taken for it. The image's units then stand aside: the boot unit
	// waits for the early agent's ready file, the serving unit for the
	// early agent to exit (and serves after it, under systemd's
	// restarts). /run is a tmpfs the initramfs mounted, which systemd
	// keeps: the file is gone at the next boot.
	EarlyAgentFile = "/run/banger/early-agent"
	// TestMarker is printed on the console after a successful switch when
	// the kernel command line has banger.initrd_test=1.
	TestMarker = "BANGER-INITRD: switch_root ok"
)
