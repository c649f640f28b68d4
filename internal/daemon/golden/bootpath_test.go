package golden_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/daemon/golden"
)

// TestCustomizeMasksTheBootPath: every unit and generator of the lists is
// a link to /dev/null in the tree's /etc afterwards, whatever was there
// (a file, a link to the packaged unit), and a second Customize keeps it so.
func TestCustomizeMasksTheBootPath(t *testing.T) {
	tree := t.TempDir()
	agent := filepath.Join(t.TempDir(), "agent")
	write(t, agent, "#!agent")
	write(t, filepath.Join(tree, "etc/systemd/system/networking.service"), "[Unit]\n")
	if err := os.MkdirAll(filepath.Join(tree, "etc/systemd/system"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/lib/systemd/system/apt-daily.timer", filepath.Join(tree, "etc/systemd/system/apt-daily.timer")); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := golden.Customize(tree, agent, "vm"); err != nil {
			t.Fatal(err)
		}
		for dir, masks := range map[string][]golden.Mask{
			"etc/systemd/system":            golden.MaskedUnits,
			"etc/systemd/system-generators": golden.MaskedGenerators,
		} {
			for _, m := range masks {
				got, err := os.Readlink(filepath.Join(tree, dir, m.Name))
				if err != nil || got != "/dev/null" {
					t.Errorf("%s/%s -> %q, %v; want a mask (-> /dev/null)", dir, m.Name, got, err)
				}
			}
		}
	}
}

// TestMasksSpareWhatTheVMNeeds: the lists are well formed (a reason each,
// no duplicates, unit or generator names) and never name what a banger VM
// needs: the agent's units, sshd, the journal, udev, dbus and logind, the
// remount of /, the fstab generator.
func TestMasksSpareWhatTheVMNeeds(t *testing.T) {
	needed := []string{"banger-agent.service", "banger-agent-boot.service", "ssh.service", "sshd.service",
		"systemd-journald.service", "systemd-udevd.service", "systemd-udev-trigger.service", "dbus.service",
		"systemd-logind.service", "systemd-remount-fs.service", "systemd-fstab-generator", "systemd-tmpfiles-setup.service",
		"getty@.service", "serial-getty@.service", "dev-mqueue.mount", "fstrim.timer"}
	seen := map[string]bool{}
	check := func(m golden.Mask, generator bool) {
		if seen[m.Name] {
			t.Errorf("%s is masked twice", m.Name)
		}
		seen[m.Name] = true
		if strings.TrimSpace(m.Why) == "" {
			t.Errorf("%s is masked without a reason", m.Name)
		}
		if strings.ContainsAny(m.Name, "/ ") || m.Name == "" {
			t.Errorf("mask name %q is not a unit or generator name", m.Name)
		}
		isUnit := strings.Contains(m.Name, ".")
		if isUnit == generator {
			t.Errorf("%s is in the wrong list (generator: %v)", m.Name, generator)
		}
		for _, n := range needed {
			if m.Name == n {
				t.Errorf("%s is masked, but a banger VM needs it", n)
			}
		}
	}
	for _, m := range golden.MaskedUnits {
		check(m, false)
	}
	for _, m := range golden.MaskedGenerators {
		check(m, true)
	}
}

// TestTmpIsKeptAtBoot: with the image's tmpfiles override, systemd-tmpfiles
// run as at boot leaves a file in /tmp (put there by vm cp right after the
// agent said ready); without it, the stock "D /tmp" would remove it.
func TestTmpIsKeptAtBoot(t *testing.T) {
	st, err := exec.LookPath("systemd-tmpfiles")
	if err != nil {
		t.Skip("systemd-tmpfiles is not installed")
	}
	tree := t.TempDir()
	agent := filepath.Join(t.TempDir(), "agent")
	write(t, agent, "#!agent")
	if err := golden.Customize(tree, agent, "vm"); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(tree, "tmp/copied-in"), "x")
	out, err := exec.Command(st, "--root="+tree, "--create", "--remove", "--boot", "tmp.conf").CombinedOutput()
	if err != nil {
		t.Skipf("systemd-tmpfiles cannot run on a tree here: %v: %s", err, out)
	}
	if _, err := os.Stat(filepath.Join(tree, "tmp/copied-in")); err != nil {
		t.Fatalf("systemd-tmpfiles at boot removed a file from /tmp: %v", err)
	}
}
