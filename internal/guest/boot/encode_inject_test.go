package boot

import (
	"strings"
	"testing"
)

// A string field holding a blank must not add a kernel parameter of its
// own: the encoder leaves out what ParseCmdline would refuse, so no value
// can inject banger.* (or any other) parameters into the guest's command
// line, whatever a caller lets through.
func TestCmdlineLeavesOutInvalidValues(t *testing.T) {
	for _, s := range []Settings{
		{Hostname: "vm banger.transport=serial init=/bin/sh"},
		{Hostname: "vm\tinit=/bin/sh"},
		{Iface: "eth0 init=/bin/sh"},
		{Transport: "vsock init=/bin/sh"},
	} {
		line := s.Cmdline()
		if strings.Contains(line, "init=") || strings.Count(line, "banger.transport=") > 1 {
			t.Errorf("Settings %+v encode to %q: a value became a parameter", s, line)
		}
		got, err := ParseCmdline(line)
		if err != nil || len(got.Warnings) != 0 {
			t.Errorf("ParseCmdline(%q) = %+v, %v: the encoder wrote what the agent refuses", line, got, err)
		}
	}
}
