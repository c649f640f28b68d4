// Package privops is the port through which bangerd asks for everything
// that needs root: the bridge, taps, NAT and published ports, ip_forward,
// and loop-backed device-mapper snapshots. It holds only the interface and
// its value types. It has two adapters: privhelperd.SystemExecutor, in
// process, for a bangerd running as root; and privhelper.Client, the client
// of `bangerd helper`, for a bangerd running as a user. Callers cannot tell
// them apart.
package privops
