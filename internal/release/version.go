package release

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Version is a release version, vMAJOR.MINOR.PATCH with an optional
// -PRERELEASE (semver 2.0 without build metadata).
type Version struct {
	Major, Minor, Patch int
	Pre                 string
}

// MaxVersionLen bounds the text of a version.
const MaxVersionLen = 64

// maxNumDigits bounds each numeric part, so that it fits an int anywhere.
const maxNumDigits = 9

// gitDescribe matches what `git describe --tags --dirty` adds to a tag: the
// commits after it and the commit's abbreviated name, or -dirty.
var gitDescribe = regexp.MustCompile(`-[0-9]+-g[0-9a-f]{4,40}(-dirty)?$|-dirty$`)

// ParseVersion parses "v1.2.3" or "v1.2.3-rc.1"; anything else (a dev build,
// a git describe with commits after the tag) is an error saying so.
// Numeric parts have no leading zeros and at most 9 digits, prerelease
// identifiers are dot-separated [0-9A-Za-z-]+ (numeric ones without leading
// zeros), build metadata (+...) is refused, and the whole is at most
// MaxVersionLen bytes.
func ParseVersion(s string) (Version, error) {
	v, err := parseVersion(s)
	if err != nil {
		return Version{}, fmt.Errorf("%q is not a release version: %s", clip(s, MaxVersionLen+16), err)
	}
	return v, nil
}

// parseVersion returns the reason s is not a version, without s.
func parseVersion(s string) (Version, error) {
	var v Version
	switch {
	case len(s) > MaxVersionLen:
		return v, fmt.Errorf("longer than %d bytes", MaxVersionLen)
	case s == "dev" || s == "":
		return v, fmt.Errorf("a development build (built without VERSION); releases are named vMAJOR.MINOR.PATCH")
	case !strings.HasPrefix(s, "v"):
		return v, fmt.Errorf("want vMAJOR.MINOR.PATCH with the leading v")
	case strings.Contains(s, "+"):
		return v, fmt.Errorf("build metadata (+...) is not part of a release version")
	case gitDescribe.MatchString(s):
		return v, fmt.Errorf("a git describe of a build after a tag (or of a dirty tree), not a release")
	}
	core, pre, hasPre := strings.Cut(s[1:], "-")
	parts := strings.Split(core, ".")
	if len(parts) != 3 {
		return v, fmt.Errorf("want vMAJOR.MINOR.PATCH, three numbers")
	}
	nums := [3]*int{&v.Major, &v.Minor, &v.Patch}
	for i, p := range parts {
		n, err := parseNum(p)
		if err != nil {
			return v, fmt.Errorf("%s part %q: %s", [3]string{"major", "minor", "patch"}[i], clip(p, 16), err)
		}
		*nums[i] = n
	}
	if hasPre {
		if err := checkPre(pre); err != nil {
			return v, fmt.Errorf("prerelease %q: %s", pre, err)
		}
		v.Pre = pre
	}
	return v, nil
}

// parseNum parses a semver numeric part.
func parseNum(p string) (int, error) {
	if p == "" {
		return 0, fmt.Errorf("empty")
	}
	if len(p) > maxNumDigits {
		return 0, fmt.Errorf("more than %d digits", maxNumDigits)
	}
	if !allDigits(p) {
		return 0, fmt.Errorf("not a number")
	}
	if len(p) > 1 && p[0] == '0' {
		return 0, fmt.Errorf("leading zero")
	}
	return strconv.Atoi(p)
}

// checkPre checks semver 2.0 prerelease identifiers.
func checkPre(pre string) error {
	for id := range strings.SplitSeq(pre, ".") {
		if id == "" {
			return fmt.Errorf("empty identifier")
		}
		for _, c := range []byte(id) {
			if !isAlnum(c) && c != '-' {
				return fmt.Errorf("identifier %q has a character outside [0-9A-Za-z-]", id)
			}
		}
		if allDigits(id) && len(id) > 1 && id[0] == '0' {
			return fmt.Errorf("numeric identifier %q has a leading zero", id)
		}
	}
	return nil
}

func allDigits(s string) bool {
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// clip shortens s for an error message.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// String renders v as ParseVersion reads it.
func (v Version) String() string {
	s := fmt.Sprintf("v%d.%d.%d", v.Major, v.Minor, v.Patch)
	if v.Pre != "" {
		s += "-" + v.Pre
	}
	return s
}

// Compare orders versions by semver precedence: -1, 0 or 1. A version
// with a prerelease is lower than the same version without one;
// prerelease identifiers compare one by one, numeric ones as numbers and
// below alphanumeric ones, and a shorter list that is a prefix of a longer
// one is lower.
func (v Version) Compare(w Version) int {
	for _, d := range [3][2]int{{v.Major, w.Major}, {v.Minor, w.Minor}, {v.Patch, w.Patch}} {
		if c := cmpInt(d[0], d[1]); c != 0 {
			return c
		}
	}
	switch {
	case v.Pre == w.Pre:
		return 0
	case v.Pre == "":
		return 1
	case w.Pre == "":
		return -1
	}
	a, b := strings.Split(v.Pre, "."), strings.Split(w.Pre, ".")
	for i := 0; i < len(a) && i < len(b); i++ {
		if c := cmpIdent(a[i], b[i]); c != 0 {
			return c
		}
	}
	return cmpInt(len(a), len(b))
}

// cmpIdent compares two prerelease identifiers.
func cmpIdent(a, b string) int {
	an, bn := allDigits(a), allDigits(b)
	switch {
	case an && bn:
		// Without leading zeros, a longer number is a larger one.
		if c := cmpInt(len(a), len(b)); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	case an:
		return -1
	case bn:
		return 1
	}
	return strings.Compare(a, b)
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
