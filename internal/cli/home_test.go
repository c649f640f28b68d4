package cli_test

import (
	"path/filepath"
	"testing"
)

// noDaemonHome gives the test a HOME of its own (config, state and
// runtime dirs under it, no BANGER_CONFIG) in which the CLI can never
// start a daemon: BANGER_DAEMON_BIN is /bin/false. It returns the HOME.
func noDaemonHome(t *testing.T) string {
	t.Helper()
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", "")
	t.Setenv("XDG_STATE_HOME", "")
	t.Setenv("XDG_RUNTIME_DIR", filepath.Join(home, "run"))
	t.Setenv("BANGER_CONFIG", "")
	t.Setenv("BANGER_DAEMON_BIN", "/bin/false")
	return home
}
