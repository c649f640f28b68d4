package scriptstest

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// runInstall runs scripts/install.sh with only the given environment
// (plus PATH) and returns its combined output.
func runInstall(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "sh", append([]string{filepath.Join(repoRoot(t), "scripts", "install.sh")}, args...)...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// fakeBins writes stand-in binaries and returns their directory.
func fakeBins(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"banger", "bangerd", "banger-vsock-agent"} {
		if err := os.WriteFile(filepath.Join(dir, b), []byte("#!/bin/sh\necho "+b+"\n"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// files lists the regular files under root, relative to it.
func files(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

func execStart(t *testing.T, unit string) string {
	t.Helper()
	b, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "ExecStart="); ok {
			return v
		}
	}
	t.Fatalf("%s has no ExecStart", unit)
	return ""
}

func TestInstallScriptStagesAndUninstalls(t *testing.T) {
	bins := fakeBins(t)
	for _, tc := range []struct{ prefix, helper, daemon string }{
		{"/usr/local", "/usr/local/bin/bangerd helper", "/usr/local/bin/bangerd --background"},
		{"/usr", "/usr/bin/bangerd helper", "/usr/bin/bangerd --background"},
		{"/opt/banger/", "/opt/banger/bin/bangerd helper", "/opt/banger/bin/bangerd --background"},
	} {
		t.Run(strings.Trim(tc.prefix, "/"), func(t *testing.T) {
			dest := t.TempDir()
			p := strings.TrimSuffix(tc.prefix, "/")
			// Something else in the same tree must survive --uninstall.
			other := filepath.Join(dest, strings.TrimPrefix(p, "/"), "bin", "other-tool")
			if err := os.MkdirAll(filepath.Dir(other), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(other, []byte("x"), 0o755); err != nil {
				t.Fatal(err)
			}
			env := []string{"DESTDIR=" + dest, "PREFIX=" + tc.prefix, "BIN_DIR=" + bins}
			out, err := runInstall(t, env)
			if err != nil {
				t.Fatalf("install: %v\n%s", err, out)
			}
			if strings.Contains(out, "systemctl") {
				t.Errorf("with DESTDIR set the script talked about systemctl:\n%s", out)
			}
			rel := strings.TrimPrefix(p, "/")
			want := []string{
				rel + "/bin/banger", rel + "/bin/banger-vsock-agent", rel + "/bin/bangerd", rel + "/bin/other-tool",
				rel + "/lib/systemd/system/banger-helper.service",
				rel + "/lib/systemd/user/bangerd.service",
				rel + "/share/doc/banger/install.md",
			}
			slices.Sort(want)
			if got := files(t, dest); !slices.Equal(got, want) {
				t.Fatalf("installed tree:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			for _, b := range []string{"banger", "bangerd", "banger-vsock-agent"} {
				st, err := os.Stat(filepath.Join(dest, rel, "bin", b))
				if err != nil || st.Mode().Perm() != 0o755 {
					t.Errorf("%s: %v, mode %v; want 0755", b, err, st.Mode())
				}
			}
			if got := execStart(t, filepath.Join(dest, rel, "lib/systemd/system/banger-helper.service")); got != tc.helper {
				t.Errorf("helper ExecStart=%q, want %q", got, tc.helper)
			}
			if got := execStart(t, filepath.Join(dest, rel, "lib/systemd/user/bangerd.service")); got != tc.daemon {
				t.Errorf("daemon ExecStart=%q, want %q", got, tc.daemon)
			}
			// A second install over the first is fine.
			if out, err := runInstall(t, env); err != nil {
				t.Fatalf("second install: %v\n%s", err, out)
			}

			out, err = runInstall(t, env, "--uninstall")
			if err != nil {
				t.Fatalf("uninstall: %v\n%s", err, out)
			}
			if strings.Contains(out, "systemctl") {
				t.Errorf("with DESTDIR set, --uninstall talked about systemctl:\n%s", out)
			}
			if got := files(t, dest); !slices.Equal(got, []string{rel + "/bin/other-tool"}) {
				t.Errorf("after --uninstall: %v, want only the unrelated file", got)
			}
		})
	}
}

func TestInstallScriptRefusesBadInput(t *testing.T) {
	dest := t.TempDir()
	empty := t.TempDir()
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"missing binaries", []string{"DESTDIR=" + dest, "BIN_DIR=" + empty}, nil, "make build"},
		{"relative prefix", []string{"DESTDIR=" + dest, "PREFIX=usr", "BIN_DIR=" + fakeBins(t)}, nil, "absolute"},
		{"odd prefix", []string{"DESTDIR=" + dest, "PREFIX=/opt/a#b", "BIN_DIR=" + fakeBins(t)}, nil, "plain path"},
		{"unknown flag", []string{"DESTDIR=" + dest}, []string{"--enable"}, "unknown argument"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runInstall(t, tc.env, tc.args...)
			if err == nil || !strings.Contains(out, tc.want) {
				t.Errorf("err %v, output:\n%s\nwant a failure mentioning %q", err, out, tc.want)
			}
			if got := files(t, dest); len(got) != 0 {
				t.Errorf("a refused run installed %v", got)
			}
		})
	}
}

// Run from a checkout without options, the script installs the local
// build (make install's behaviour); --version or --base-url make it
// install a release instead.
func TestInstallScriptPicksItsMode(t *testing.T) {
	dest := t.TempDir()
	out, _ := runInstall(t, []string{"DESTDIR=" + dest})
	if strings.Contains(out, "installing banger v") || !(strings.Contains(out, "make build") || strings.Contains(out, "installed ")) {
		t.Errorf("from a checkout without options, not the local install:\n%s", out)
	}
	empty := t.TempDir()
	out, err := runInstall(t, []string{"DESTDIR=" + t.TempDir()}, "--version", "v9.9.9", "--base-url", "file://"+empty)
	if err == nil || !strings.Contains(out, "cannot download") {
		t.Errorf("--version from a checkout did not try the release tree: %v\n%s", err, out)
	}
	out, err = runInstall(t, []string{"DESTDIR=" + t.TempDir()}, "--local", "--version", "v9.9.9")
	if err == nil || !strings.Contains(out, "not with --local") {
		t.Errorf("--local --version: %v\n%s", err, out)
	}
}
