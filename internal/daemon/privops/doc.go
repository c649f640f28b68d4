// Package privops is the port through which bangerd asks for everything
// that needs root: the bridge, taps, NAT and published ports, ip_forward,
// and loop-backed device-mapper snapshots. It holds only the interface and
// its value types. privhelper has the two adapters: the in-process one a
// bangerd running as root uses, and the client of `bangerd helper` a
// bangerd running as a user uses. Callers cannot tell them apart.
package privops
