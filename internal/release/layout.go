package release

import (
	"fmt"
	"slices"
	"strings"
)

// The files of a release tree under its base URL:
//
//	<base>/install.sh
//	<base>/latest                       "v0.3.1\n"
//	<base>/<version>/banger_<version>_linux_<arch>.tar.gz
//	<base>/<version>/bangerd.service, banger-helper.service
//	<base>/<version>/SHA256SUMS, SHA256SUMS.sig
const (
	LatestFile = "latest"
	SumsFile   = "SHA256SUMS"
	SigFile    = "SHA256SUMS.sig"
)

// Units are the systemd unit templates a release publishes beside its
// archives (and inside them), so that what changed between two releases
// can be told without downloading either archive.
var Units = []string{"bangerd.service", "banger-helper.service"}

// Binaries are the executables of a release archive.
var Binaries = []string{"banger", "bangerd", "banger-vsock-agent"}

// ArchiveFiles are all the entries of a release archive, flat: the
// binaries, the units, install.md and CHANGELOG.md. No other entry is
// accepted.
var ArchiveFiles = []string{"banger", "bangerd", "banger-vsock-agent", "bangerd.service", "banger-helper.service", "install.md", "CHANGELOG.md"}

// Arches are the Go architecture names releases are built for (uname -m
// x86_64 is amd64, aarch64 is arm64).
var Arches = []string{"amd64", "arm64"}

// CheckArch returns an error unless goarch is one of Arches.
func CheckArch(goarch string) error {
	if !slices.Contains(Arches, goarch) {
		return fmt.Errorf("banger releases are built for linux %s, not %q", strings.Join(Arches, " and "), goarch)
	}
	return nil
}

// ArchiveName is the archive of version v for a Go architecture name
// ("amd64", "arm64"): "banger_v0.3.1_linux_amd64.tar.gz". It does not
// check goarch (CheckArch does); the name of another is in no release's
// sums, so Download refuses it.
func ArchiveName(v Version, goarch string) string {
	return archivePrefix(v) + goarch + archiveSuffix
}

// archivePrefix and archiveSuffix surround the arch in an archive's name.
func archivePrefix(v Version) string { return "banger_" + v.String() + "_linux_" }

const archiveSuffix = ".tar.gz"

// MaxArchiveSize bounds a release archive on download.
const MaxArchiveSize = 256 << 20
