// Package privhelperd is the root side of privops: SystemExecutor, the
// privileged work itself (netmgr.Host for links, nftables and ip_forward;
// dmsnap for loop devices and snapshots), which a bangerd running as root
// uses in-process; and `bangerd helper` (Main), the small daemon on
// /run/banger/helper.sock that does that work for the users in its allow
// list. The helper authenticates each caller by SO_PEERCRED, accepts only
// the typed requests of privhelper's protocol on banger's own objects
// (interfaces with banger's prefixes, paths under the caller's state dir
// with symlinks resolved, subnets inside the configured range) and hands
// them to the executor. There is no "run this command" request, by
// design. Main starts nothing of the daemon's: no config, store, state
// dir or log file.
package privhelperd
