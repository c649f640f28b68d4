package doctor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
)

const (
	fixKVMMissing = "load KVM: `sudo modprobe kvm_intel` (or kvm_amd), with virtualisation enabled in the firmware; in a VM, enable nested virtualisation"
	fixKVMAccess  = "add yourself to the kvm group: `sudo usermod -aG kvm $USER`, then log in again"
	fixQEMU       = "install QEMU: `sudo apt install qemu-system-x86`, or set qemu_bin to a qemu-system-x86_64"
)

var fixFirecracker = "install Firecracker " + TestedFirecracker + " from its release page and put it on PATH, or set firecracker_bin"

var errNoKVM = errors.New("/dev/kvm does not exist")

// probeKVM opens /dev/kvm read-write, as Firecracker and QEMU do.
func probeKVM(h Host) error {
	f, err := os.OpenFile(h.path("/dev/kvm"), os.O_RDWR, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return errNoKVM
		}
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("/dev/kvm is not usable by this user: %w", err)
	}
	f.Close()
	return nil
}

func checkKVM(err error) Result {
	const effect = "Firecracker cannot run; QEMU still works, under software emulation (much slower)"
	switch {
	case err == nil:
		return ok("kvm", "/dev/kvm opens read-write: VMs run with hardware virtualisation")
	case errors.Is(err, os.ErrPermission):
		return warn("kvm", fixKVMAccess, "%v: %s", err, effect)
	}
	return warn("kvm", fixKVMMissing, "%v: %s", err, effect)
}

// vmmProbe is what looking for one VMM found.
type vmmProbe struct {
	path    string
	err     error // not found
	version string
	verErr  error // found, but its version could not be told
	tooOld  bool
}

// probeFirecracker finds Firecracker the way the daemon does (firecracker_bin,
// else PATH) and asks its version.
func probeFirecracker(ctx context.Context, h Host, bin string) vmmProbe {
	var p vmmProbe
	if bin != "" {
		if fi, err := os.Stat(bin); err != nil || fi.IsDir() {
			p.err = fmt.Errorf("firecracker_bin %s is not a file", bin)
			return p
		}
		p.path = bin
	} else {
		path, err := h.lookPath("firecracker")
		if err != nil {
			p.err = err
			return p
		}
		p.path = path
	}
	line, err := firstLine(ctx, p.path, "--version")
	if err != nil {
		p.verErr = err
		return p
	}
	v, nums, err := parseFirecrackerVersion(line)
	if err != nil {
		p.verErr = err
		return p
	}
	p.version = v
	_, minNums, _ := parseFirecrackerVersion("Firecracker " + MinFirecracker)
	p.tooOld = compareVersion(nums, minNums) < 0
	return p
}

var fcVersionRE = regexp.MustCompile(`^Firecracker v(\d{1,9})\.(\d{1,9})\.(\d{1,9})(\S*)`)

// parseFirecrackerVersion reads the first line of `firecracker --version`,
// "Firecracker v1.14.2", into "v1.14.2" and its numbers.
func parseFirecrackerVersion(line string) (string, [3]int, error) {
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

func checkFirecracker(p vmmProbe, bin string) Result {
	switch {
	case p.err != nil && bin != "":
		return warn("firecracker", "correct firecracker_bin, or remove it to use firecracker from PATH",
			"%v: auto uses QEMU instead", p.err)
	case p.err != nil:
		return warn("firecracker", fixFirecracker, "not found (%v): auto uses QEMU instead", p.err)
	case p.verErr != nil:
		return warn("firecracker", fixFirecracker, "%s found, but its version cannot be told: %v", p.path, p.verErr)
	case p.tooOld:
		return warn("firecracker", fixFirecracker, "%s is Firecracker %s, older than %s, the oldest banger drives (tested with %s)",
			p.path, p.version, MinFirecracker, TestedFirecracker)
	}
	return ok("firecracker", "%s is Firecracker %s (banger needs %s or later, and is tested with %s)",
		p.path, p.version, MinFirecracker, TestedFirecracker)
}

// probeQEMU finds QEMU the way the daemon does (qemu_bin, else PATH) and
// asks its version.
func probeQEMU(ctx context.Context, h Host, bin string) vmmProbe {
	var p vmmProbe
	if bin != "" {
		if !isExecutable(bin) {
			p.err = fmt.Errorf("qemu_bin %s is not an executable file", bin)
			return p
		}
		p.path = bin
	} else {
		path, err := h.lookPath("qemu-system-x86_64")
		if err != nil {
			p.err = err
			return p
		}
		p.path = path
	}
	line, err := firstLine(ctx, p.path, "--version")
	if err != nil {
		p.verErr = err
		return p
	}
	if m := qemuVersionRE.FindStringSubmatch(line); m != nil {
		p.version = m[1]
	} else {
		p.version = fmt.Sprintf("of an unrecognised version (%q)", line)
	}
	return p
}

var qemuVersionRE = regexp.MustCompile(`^QEMU emulator version (\d+\.\d+(?:\.\d+)?)`)

func checkQEMU(p vmmProbe, bin string) Result {
	switch {
	case p.err != nil && bin != "":
		return warn("qemu", "correct qemu_bin, or remove it to use qemu-system-x86_64 from PATH", "%v", p.err)
	case p.err != nil:
		return warn("qemu", fixQEMU, "not found (%v)", p.err)
	case p.verErr != nil:
		// A QEMU that cannot even print its version will not boot a VM.
		return warn("qemu", fixQEMU, "%s found, but it does not run: %v", p.path, p.verErr)
	}
	return ok("qemu", "%s is QEMU %s", p.path, p.version)
}

// found is the daemon's view of a VMM: it is used when it is found.
func (p vmmProbe) found() bool { return p.err == nil }

// checkVMM says which VMM `vm start` will use, by the daemon's rules:
// Firecracker when it is found and /dev/kvm opens read-write, else QEMU.
func checkVMM(want string, kvm error, fc, qemu vmmProbe) Result {
	switch want {
	case "firecracker":
		if !fc.found() {
			return fail("vmm", fixFirecracker+`; or set vmm = "auto"`, "vmm = firecracker, but %v", fc.err)
		}
		if kvm != nil {
			return fail("vmm", `make /dev/kvm usable (see the kvm check), or set vmm = "qemu"`, "vmm = firecracker, but %v", kvm)
		}
		return ok("vmm", "vmm = firecracker: %s with /dev/kvm", fc.path)
	case "qemu":
		if !qemu.found() {
			return fail("vmm", fixQEMU+`; or set vmm = "auto"`, "vmm = qemu, but %v", qemu.err)
		}
		if kvm != nil {
			return ok("vmm", "vmm = qemu: %s, under software emulation (%v)", qemu.path, kvm)
		}
		return ok("vmm", "vmm = qemu: %s with /dev/kvm", qemu.path)
	}
	if fc.found() && kvm == nil {
		return ok("vmm", "auto picks firecracker: %s is installed and /dev/kvm is usable", fc.path)
	}
	why := fmt.Sprint(fc.err)
	if fc.found() {
		why = fmt.Sprintf("%v (QEMU runs without it, slower)", kvm)
	}
	if qemu.found() {
		return ok("vmm", "auto picks qemu (%s): %s", qemu.path, why)
	}
	return fail("vmm", fixQEMU+"; or install Firecracker and make /dev/kvm usable",
		"no VMM can run: %s, and %v", why, qemu.err)
}
