package cli_test

import (
	"strings"
	"testing"

	"banger/internal/cli"
)

// TestDotNamesAreNamesEverywhere: "." and ".." given where a VM, image,
// kernel or operation name goes reach the daemon as names (not found), not
// as path steps its router cleans away into another endpoint (a list read
// as one record, DELETE /v1/vms/.. becoming DELETE /v1/ ...), and remove
// nothing.
func TestDotNamesAreNamesEverywhere(t *testing.T) {
	run := snapshotCLI(t)
	for _, dot := range []string{".", ".."} {
		for _, args := range [][]string{
			{"vm", "inspect", dot}, {"vm", "start", dot}, {"vm", "stop", dot}, {"vm", "restart", dot},
			{"vm", "rm", dot}, {"vm", "rm", "-f", dot}, {"vm", "logs", dot}, {"vm", "exec", dot, "--", "true"},
			{"image", "inspect", dot}, {"image", "rm", dot}, {"image", "promote", dot},
			{"kernel", "inspect", dot}, {"kernel", "rm", dot},
			{"op", "show", dot}, {"op", "cancel", dot},
		} {
			code, out, errs := run(args...)
			if code != cli.ExitFailure || !strings.Contains(errs, "not found") || strings.Contains(errs, "no endpoint") {
				t.Errorf("banger %s: exit %d, want a not-found failure:\n%s%s", strings.Join(args, " "), code, out, errs)
			}
		}
	}
	// Nothing was removed on the way.
	for _, args := range [][]string{{"image", "inspect", "img"}, {"kernel", "inspect", "kern"}, {"snapshot", "inspect", "snap1"}} {
		if code, out, errs := run(args...); code != 0 {
			t.Errorf("banger %s after the dot names: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
		}
	}
}

// TestEmptyNamesAreRefused: an empty name ("" from an unset shell
// variable: banger vm rm "$VM") makes an empty path segment, which no
// escaping can carry: the daemon's router cleaned /v1/vms//logs into
// /v1/vms/logs (the VM called "logs"), POST /v1/vms//stop into
// /v1/vms/stop, and the rest into "no endpoint: the CLI may be newer than
// the daemon; run banger daemon restart". The CLI refuses it as a usage
// error before it asks the daemon anything.
func TestEmptyNamesAreRefused(t *testing.T) {
	run := snapshotCLI(t)
	for _, args := range [][]string{
		{"vm", "inspect", ""}, {"vm", "start", ""}, {"vm", "stop", ""}, {"vm", "restart", ""},
		{"vm", "rm", ""}, {"vm", "rm", "-f", "a", ""}, {"vm", "logs", ""}, {"vm", "exec", "", "--", "true"},
		{"vm", "ssh", ""}, {"vm", "snapshot", ""},
		{"image", "inspect", ""}, {"image", "rm", ""}, {"image", "promote", ""},
		{"kernel", "inspect", ""}, {"kernel", "rm", ""},
		{"op", "show", ""}, {"op", "cancel", ""},
		{"snapshot", "inspect", ""}, {"snapshot", "rm", ""},
	} {
		code, out, errs := run(args...)
		if code != cli.ExitUsage || !strings.Contains(errs, "empty") {
			t.Errorf("banger %q: exit %d, want a usage error about the empty name:\n%s%s", args, code, out, errs)
		}
	}
}
