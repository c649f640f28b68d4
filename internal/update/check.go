package update

import (
	"bytes"
	"fmt"
	"strings"
)

// Direction decides whether installing target over installed goes ahead,
// given cmp, target's order against installed (-1 older, 0 same, 1 newer;
// release.Version.Compare). installedIsRelease false (a dev build, a git
// describe) cannot be compared: the install goes ahead.
func Direction(installed, target string, installedIsRelease bool, cmp int, allowDowngrade bool) error {
	if !installedIsRelease {
		return nil
	}
	switch {
	case cmp == 0:
		return &AlreadyError{Version: installed}
	case cmp < 0 && !allowDowngrade:
		return refused("%s is older than the installed %s: add --allow-downgrade to install it anyway", target, installed)
	}
	return nil
}

// AlreadyError says the version asked for is the one installed.
type AlreadyError struct{ Version string }

func (e *AlreadyError) Error() string { return "already at " + e.Version }

// UnitsChanged names the unit templates that differ between two releases
// (a unit present in one only counts as changed), in the order of names.
func UnitsChanged(names []string, old, new map[string][]byte) []string {
	var out []string
	for _, n := range names {
		o, ok1 := old[n]
		w, ok2 := new[n]
		if ok1 != ok2 || !bytes.Equal(o, w) {
			out = append(out, n)
		}
	}
	return out
}

// UnitsHint is what a user runs to reinstall the changed units of version v
// from the release tree at base into prefix ("" for install.sh's default)
// (an update swaps binaries, never units).
func UnitsHint(base, v, prefix string, changed []string) string {
	if len(changed) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "The systemd units changed in %s (%s); an update does not replace them. Reinstall them with:\n", v, strings.Join(changed, ", "))
	opt := ""
	if prefix != "" {
		opt = " --prefix " + prefix
	}
	fmt.Fprintf(&b, "  curl -fsSL %s/install.sh | sh -s -- --version %s%s\n", strings.TrimRight(base, "/"), v, opt)
	for _, u := range changed {
		switch u {
		case "banger-helper.service":
			b.WriteString("  sudo systemctl daemon-reload && sudo systemctl restart banger-helper\n")
		case "bangerd.service":
			b.WriteString("  systemctl --user daemon-reload && systemctl --user restart bangerd\n")
		}
	}
	return b.String()
}
