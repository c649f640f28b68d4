package guest

import (
	"bufio"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// unit is a parsed unit file: section -> key -> values, in order.
type unit map[string]map[string][]string

func parseUnit(t *testing.T, name string) unit {
	t.Helper()
	data, err := fs.ReadFile(Units, name)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	u := unit{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not a key=value line of a section: %q", name, n, line)
			}
			u[section][k] = append(u[section][k], strings.Fields(v)...)
		}
	}
	return u
}

func (u unit) has(section, key, value string) bool {
	return slices.Contains(u[section][key], value)
}

// TestUnitsStartEarly: both units start at the beginning of the boot (no
// default dependencies, so not after basic.target), the boot duties after
// the mounts they write in (the agent itself waits for / to be writable),
// both stop at shutdown, and both are wanted by the
// target UnitNames says.
func TestUnitsStartEarly(t *testing.T) {
	for name, target := range UnitNames {
		u := parseUnit(t, name)
		if !u.has("Unit", "DefaultDependencies", "no") {
			t.Errorf("%s: DefaultDependencies=no missing: it would wait for basic.target", name)
		}
		if !u.has("Unit", "Conflicts", "shutdown.target") || !u.has("Unit", "Before", "shutdown.target") {
			t.Errorf("%s: not stopped at shutdown (Conflicts= and Before=shutdown.target)", name)
		}
		for _, late := range []string{"basic.target", "sysinit.target", "local-fs.target", "multi-user.target", "network.target", "systemd-remount-fs.service"} {
			if u.has("Unit", "After", late) {
				t.Errorf("%s: ordered after %s, which its duties do not need", name, late)
			}
		}
		if !u.has("Install", "WantedBy", target) {
			t.Errorf("%s: WantedBy = %v, want %s (UnitNames)", name, u["Install"]["WantedBy"], target)
		}
	}
	boot := parseUnit(t, "banger-agent-boot.service")
	for _, dir := range []string{"/etc", "/root", "/run"} {
		if !boot.has("Unit", "RequiresMountsFor", dir) {
			t.Errorf("banger-agent-boot.service writes in %s but does not wait for its mount (RequiresMountsFor=)", dir)
		}
	}
	for _, before := range []string{"network-pre.target", "ssh.service"} {
		if !boot.has("Unit", "Before", before) {
			t.Errorf("banger-agent-boot.service must run before %s", before)
		}
	}
	serve := parseUnit(t, "banger-agent.service")
	if serve.has("Unit", "After", "banger-agent-boot.service") {
		t.Error("banger-agent.service waits for the boot duties; it should serve beside them (it says ready once they are done)")
	}
	if !serve.has("Unit", "Wants", "banger-agent-boot.service") {
		t.Error("banger-agent.service does not pull the boot duties in")
	}
}

// TestUnitsVerify runs systemd-analyze verify on the units (their agent
// path swapped for an executable of the test's), failing on any complaint
// about them: unknown keys, bad values, unknown dependencies.
func TestUnitsVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed")
	}
	dir := t.TempDir()
	agent := filepath.Join(dir, "agent")
	if err := os.WriteFile(agent, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	var files []string
	for name := range UnitNames {
		data, err := fs.ReadFile(Units, name)
		if err != nil {
			t.Fatal(err)
		}
		s := strings.ReplaceAll(string(data), "/usr/local/bin/banger-vsock-agent", agent)
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, sa, append([]string{"verify", "--man=no"}, files...)...).CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, dir) {
			t.Errorf("systemd-analyze verify: %s", line)
		}
	}
	if err != nil && !strings.Contains(string(out), dir) {
		t.Skipf("systemd-analyze verify cannot run here: %v: %s", err, out)
	}
}
