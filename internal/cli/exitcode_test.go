package cli_test

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/cli"
)

func TestExitCodes(t *testing.T) {
	home := noDaemonHome(t)
	cases := []struct {
		args []string
		code int
		err  string
	}{
		{[]string{"config", "show"}, cli.ExitOK, ""},
		{[]string{"--help"}, cli.ExitOK, ""},
		{[]string{"vm"}, cli.ExitOK, ""},
		{[]string{"bogus"}, cli.ExitUsage, `unknown command "bogus"`},
		{[]string{"vm", "bogus"}, cli.ExitUsage, `unknown command "bogus" for "banger vm"`},
		{[]string{"vm", "start"}, cli.ExitUsage, "takes one VM name"},
		{[]string{"config", "show", "--nope"}, cli.ExitUsage, "unknown flag"},
		{[]string{"config", "show", "-o", "xml"}, cli.ExitUsage, "is not an output format"},
		{[]string{"doctor", "extra"}, cli.ExitUsage, "banger doctor takes no arguments"},
		// A config error is a failed check: reported on stdout, exit 1.
		{[]string{"--config", filepath.Join(home, "absent.toml"), "doctor"}, cli.ExitFailure, ""},
		{[]string{"vm", "run", "a", "b"}, cli.ExitUsage, "at most one image"},
		{[]string{"vm", "exec", "x"}, cli.ExitUsage, "usage: banger vm exec NAME -- CMD"},
		{[]string{"vm", "create", "--memory", "lots"}, cli.ExitUsage, "--memory"},
		{[]string{"vm", "cp", "a", "b"}, cli.ExitUsage, "one side must be NAME:/path"},
		{[]string{"--config", filepath.Join(home, "absent.toml"), "config", "show"}, cli.ExitFailure, "absent.toml"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, "_"), func(t *testing.T) {
			var out, errb bytes.Buffer
			code := cli.Run(context.Background(), c.args, strings.NewReader(""), &out, &errb)
			if code != c.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, c.code, errb.String())
			}
			if c.err == "" {
				if errb.Len() != 0 {
					t.Fatalf("unexpected stderr: %s", errb.String())
				}
				return
			}
			first := strings.SplitN(errb.String(), "\n", 2)[0]
			if !strings.HasPrefix(first, "banger: ") || !strings.Contains(first, c.err) {
				t.Fatalf("first stderr line %q, want 'banger: ...%s...'", first, c.err)
			}
		})
	}
}
