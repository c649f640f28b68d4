// Package guest carries the files banger installs into guest images (the
// agent's systemd units), embedded so the daemon can install them without
// a source checkout.
package guest

import "embed"

// Units are the systemd unit files, by file name.
//
//go:embed banger-agent-boot.service banger-agent.service
var Units embed.FS

// UnitNames lists the unit files in Units with the target that wants each.
// Both are wanted by sysinit.target without being ordered after it: they
// start at the beginning of the boot, not once basic.target is reached.
var UnitNames = map[string]string{
	"banger-agent-boot.service": "sysinit.target",
	"banger-agent.service":      "sysinit.target",
}
