package hostprobe

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
)

// Minimum Firecracker version banger drives, and the one it is tested with.
const (
	MinFirecracker    = "v1.14.0"
	TestedFirecracker = "v1.14.2"
)

// DefaultQEMU is the QEMU looked for on PATH when qemu_bin is not set.
const DefaultQEMU = "qemu-system-x86_64"

// Binary is what looking for one VMM binary found.
type Binary struct {
	// Setting is the configured path (firecracker_bin, qemu_bin), or ""
	// when the binary is looked for on PATH.
	Setting string
	// Path is where it was found; Err says why it was not.
	Path string
	Err  error
	// Version, VersionErr and TooOld are filled only when the probe was
	// asked to run `--version` (Options.Versions): the version found, or
	// why it could not be told, and whether it is older than banger drives.
	Version    string
	VersionErr error
	TooOld     bool
}

// Found reports whether the binary was found: the daemon uses a found
// binary whatever its version.
func (b Binary) Found() bool { return b.Err == nil }

// FindFirecracker finds Firecracker as the daemon runs it: firecracker_bin
// when set (which must be a file this user may execute: one that is not
// would make auto pick a Firecracker that cannot start), else firecracker
// on h.Path.
func FindFirecracker(h Host, setting string) Binary {
	return findBinary(h, "firecracker_bin", setting, "firecracker")
}

// FindQEMU finds QEMU as the daemon runs it: qemu_bin when set (which must
// be executable), else qemu-system-x86_64 on h.Path.
func FindQEMU(h Host, setting string) Binary {
	return findBinary(h, "qemu_bin", setting, DefaultQEMU)
}

// findBinary is the setting named key when set (which must be a file this
// user may execute), else name on h.Path.
func findBinary(h Host, key, setting, name string) Binary {
	b := Binary{Setting: setting}
	if setting != "" {
		if !IsExecutable(setting) {
			b.Err = fmt.Errorf("%s %s is not an executable file", key, setting)
			return b
		}
		b.Path = setting
		return b
	}
	b.Path, b.Err = h.LookPath(name)
	return b
}

// firecrackerVersion asks a found Firecracker its version.
func (b *Binary) firecrackerVersion(ctx context.Context) {
	if !b.Found() {
		return
	}
	line, err := FirstLine(ctx, b.Path, "--version")
	if err != nil {
		b.VersionErr = err
		return
	}
	v, nums, err := ParseFirecrackerVersion(line)
	if err != nil {
		b.VersionErr = err
		return
	}
	b.Version = v
	_, minNums, _ := ParseFirecrackerVersion("Firecracker " + MinFirecracker)
	b.TooOld = compareVersion(nums, minNums) < 0
}

// qemuVersion asks a found QEMU its version; a QEMU that cannot print it
// will not boot a VM either.
func (b *Binary) qemuVersion(ctx context.Context) {
	if !b.Found() {
		return
	}
	line, err := FirstLine(ctx, b.Path, "--version")
	if err != nil {
		b.VersionErr = err
		return
	}
	if m := qemuVersionRE.FindStringSubmatch(line); m != nil {
		b.Version = m[1]
	} else {
		b.Version = fmt.Sprintf("of an unrecognised version (%q)", line)
	}
}

var (
	fcVersionRE   = regexp.MustCompile(`^Firecracker v(\d{1,9})\.(\d{1,9})\.(\d{1,9})(\S*)`)
	qemuVersionRE = regexp.MustCompile(`^QEMU emulator version (\d+\.\d+(?:\.\d+)?)`)
)

// ParseFirecrackerVersion reads the first line of `firecracker --version`,
// "Firecracker v1.14.2", into "v1.14.2" and its numbers.
func ParseFirecrackerVersion(line string) (string, [3]int, error) {
	var nums [3]int
	m := fcVersionRE.FindStringSubmatch(line)
	if m == nil {
		return "", nums, fmt.Errorf("unexpected version line %q (want \"Firecracker vX.Y.Z\")", line)
	}
	for i := range nums {
		nums[i], _ = strconv.Atoi(m[i+1])
	}
	return "v" + m[1] + "." + m[2] + "." + m[3] + m[4], nums, nil
}

func compareVersion(a, b [3]int) int {
	for i := range a {
		if a[i] != b[i] {
			if a[i] < b[i] {
				return -1
			}
			return 1
		}
	}
	return 0
}
