package release

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

// ArchiveName is the archive of version v for a Go architecture name
// ("amd64", "arm64").
func ArchiveName(v Version, goarch string) string { panic("skeleton") }

// MaxArchiveSize bounds a release archive on download.
const MaxArchiveSize = 256 << 20
