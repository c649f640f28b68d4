package release

// Version is a release version, vMAJOR.MINOR.PATCH with an optional
// -PRERELEASE (semver 2.0 without build metadata).
type Version struct {
	Major, Minor, Patch int
	Pre                 string
}

// ParseVersion parses "v1.2.3" or "v1.2.3-rc.1"; anything else (a dev build,
// a git describe with commits after the tag) is an error saying so.
func ParseVersion(s string) (Version, error) { panic("skeleton") }

// String renders v as ParseVersion reads it.
func (v Version) String() string { panic("skeleton") }

// Compare orders versions by semver precedence: -1, 0 or 1.
func (v Version) Compare(w Version) int { panic("skeleton") }
