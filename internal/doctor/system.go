package doctor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"banger/internal/hostprobe"
)

// notBuilt explains why the networking checks only warn.
const notBuilt = "needed for bridged networking (network = bridge, and auto as root or with the helper); without it VMs use QEMU user-mode networking"

// snapshotsHook is how bangerd makes dm snapshots: as root itself (nil:
// hostprobe probes device-mapper here), as a user through the helper,
// which must answer with this build's protocol and say it can.
func snapshotsHook(h Host, hp *Helper) func(context.Context) error {
	if h.UID == 0 {
		return nil
	}
	return func(context.Context) error {
		switch {
		case hp == nil:
			return errors.New("the helper was not asked")
		case hp.Err != nil:
			return fmt.Errorf("the helper is not usable on %s: %v", hp.Socket, hp.Err)
		case hp.Protocol != hp.Want:
			return fmt.Errorf("the helper on %s speaks protocol %d, this build %d", hp.Socket, hp.Protocol, hp.Want)
		case hp.Snapshots != "":
			return fmt.Errorf("the helper cannot make them: %s", hp.Snapshots)
		}
		return nil
	}
}

func checkDaemon(d Daemon, cliVersion string, api int) Result {
	switch {
	case d.Err != nil:
		return fail("daemon", "run `banger daemon restart`; if that fails too, read `banger daemon logs`", "cannot talk to bangerd: %v", d.Err)
	case !d.Running:
		return warn("daemon", "nothing to do; `banger daemon start` starts it now",
			"bangerd is not running on %s: the CLI starts it on demand", d.Socket)
	case d.API != api:
		return fail("daemon", "run `banger daemon restart` to run the daemon of this build",
			"bangerd %s (pid %d) speaks API version %d, this CLI speaks %d: it refuses this CLI's requests", d.Version, d.PID, d.API, api)
	case d.Version != cliVersion:
		return warn("daemon", "run `banger daemon restart` to run the daemon of this build",
			"bangerd %s (pid %d) is another build than this CLI (%s)", d.Version, d.PID, cliVersion)
	}
	return ok("daemon", "bangerd %s is running (pid %d) on %s", d.Version, d.PID, d.Socket)
}

// checkHelper reports on the privileged helper: not needed as root; for a
// user, reachable and of this build, or what that costs.
func checkHelper(h Host, hp *Helper, network, cliVersion string) Result {
	if h.UID == 0 {
		return ok("helper", "banger runs as root, so bangerd does privileged work itself: no helper needed")
	}
	const install = "install it (`sudo make install` or scripts/install.sh), add yourself to /etc/banger/helper-users, then `sudo systemctl enable --now banger-helper`"
	bad := warn
	if network == "bridge" {
		bad = fail // network = bridge cannot work without it
	}
	switch {
	case hp == nil:
		return warn("helper", "fix what the config check reports, then run `banger doctor` again",
			"the helper was not probed: without a usable config, its socket (helper_socket) is not known")
	case hp.Err != nil:
		return bad("helper", install, "bangerd runs as you, so bridged networking and dmsnap disks go through the helper, which is not usable on %s: %v; VMs get user-mode networking and copied disks", hp.Socket, hp.Err)
	case hp.Protocol != hp.Want:
		return bad("helper", "`sudo systemctl restart banger-helper` after installing this build",
			"the helper on %s (%s) speaks protocol %d, this build %d", hp.Socket, hp.Version, hp.Protocol, hp.Want)
	case hp.Version != cliVersion:
		return warn("helper", "`sudo systemctl restart banger-helper` after installing this build",
			"the helper on %s is build %s, this CLI %s (same protocol, so it works)", hp.Socket, hp.Version, cliVersion)
	}
	return ok("helper", "the helper on %s answers (build %s): bridged networking and dmsnap disks go through it", hp.Socket, hp.Version)
}

// checkDeviceMapper reports on device-mapper and its snapshot target.
func checkDeviceMapper(d hostprobe.DeviceMapper) Result {
	const why = "cow = dmsnap, and cow = auto as root or through the helper, use it; without it disks are reflink clones or copies"
	const fix = "`sudo modprobe dm_snapshot` (it loads device-mapper too)"
	present := func() Result {
		return ok("device-mapper", "/dev/mapper/control and the snapshot target are present (%s)", why)
	}
	switch {
	case d.DMErr == nil:
		return present()
	case !d.Control && strings.Contains(d.DMErr.Error(), "dmsetup mknodes"):
		return warn("device-mapper", "`sudo dmsetup mknodes`", "%v (%s)", d.DMErr, why)
	case !d.Control:
		return warn("device-mapper", fix, "%v (%s)", d.DMErr, why)
	case d.NeedsRoot && d.Target:
		// As a user the control node does not open; sysfs still tells.
		return present()
	case d.NeedsRoot || !d.Target:
		return warn("device-mapper", fix, "device-mapper is loaded but its snapshot target is not (%s)", why)
	}
	// Present but unusable: a node without its driver, say.
	return warn("device-mapper", "`sudo modprobe dm_mod dm_snapshot`", "%v (%s)", d.DMErr, why)
}

func checkLoop(d hostprobe.DeviceMapper) Result {
	if d.Loop {
		return ok("loop", "/dev/loop-control is present (used by dmsnap disks)")
	}
	return warn("loop", "`sudo modprobe loop`", "no /dev/loop-control: loop devices are not available (only dmsnap disks need them)")
}

func checkTun(t hostprobe.TUN) Result {
	switch {
	case !t.Present:
		return warn("tun", "`sudo modprobe tun`", "no /dev/net/tun: tap devices cannot be made (%s)", notBuilt)
	case t.Err != nil:
		// A VMM running as this user opens /dev/net/tun to attach to its
		// tap, whoever made the tap.
		return warn("tun", "`sudo chmod 0666 /dev/net/tun` (the kernel's usual mode; the tap's owner still decides who may attach)",
			"/dev/net/tun is not usable by this user (%v): a VMM running as you cannot attach to a tap, so bridged VMs fail to start", t.Err)
	}
	return ok("tun", "/dev/net/tun opens read-write (%s)", notBuilt)
}

func checkBridge(h Host) Result {
	if h.Exists("/sys/module/bridge") || h.Exists("/proc/sys/net/bridge") {
		return ok("bridge", "the bridge module is loaded (%s)", notBuilt)
	}
	return warn("bridge", "`sudo modprobe bridge`", "the bridge module is not loaded (%s)", notBuilt)
}

func checkIPForward(h Host) Result {
	const fix = "`sudo sysctl -w net.ipv4.ip_forward=1` (and net.ipv4.ip_forward = 1 in /etc/sysctl.d/ to keep it)"
	data, err := os.ReadFile(h.PathOf("/proc/sys/net/ipv4/ip_forward"))
	if err != nil {
		return warn("ip-forward", fix, "cannot read net.ipv4.ip_forward: %v (%s)", unwrapPath(err), notBuilt)
	}
	if v := string(bytes.TrimSpace(data)); v != "1" {
		return warn("ip-forward", fix, "net.ipv4.ip_forward is %s: VMs on a bridge could not reach beyond this host (%s)", v, notBuilt)
	}
	return ok("ip-forward", "net.ipv4.ip_forward is 1 (%s)", notBuilt)
}

// tool is a program bangerd runs, and the Debian package that has it.
type tool struct{ name, pkg string }

// buildTools are the programs that turn trees into disks and build
// debian-bookworm locally, as bangerd running as uid does it: root
// debootstraps; a user's bangerd builds with mmdebstrap in its unshare
// mode, which needs the setuid newuidmap and newgidmap (golden), and never
// runs debootstrap.
func buildTools(uid int) ([]tool, string) {
	if uid == 0 {
		return []tool{{"mkfs.ext4", "e2fsprogs"}, {"debootstrap", "debootstrap"}, {"apt-get", "apt"}},
			"mkfs.ext4 makes every image disk (OCI pulls and local builds); debootstrap and apt-get build debian-bookworm and its kernel when their bundles cannot be downloaded"
	}
	return []tool{{"mkfs.ext4", "e2fsprogs"}, {"mmdebstrap", "mmdebstrap"}, {"newuidmap", "uidmap"}, {"newgidmap", "uidmap"}, {"apt-get", "apt"}},
		"mkfs.ext4 makes every image disk (OCI pulls and local builds); without root, bangerd builds debian-bookworm with mmdebstrap (newuidmap and newgidmap map its ids) and its kernel with apt-get when their bundles cannot be downloaded"
}

// checkTools looks for the programs that turn trees into disks and that
// build debian-bookworm locally; the daemon looks for them on PATH.
func checkTools(h Host) Result {
	var missing, offPath, fixes, names []string
	tools, why := buildTools(h.UID)
	for _, t := range tools {
		names = append(names, t.name)
		if _, err := h.LookPath(t.name); err == nil {
			continue
		}
		if p, err := h.LookAdmin(t.name); err == nil {
			offPath = append(offPath, p)
			continue
		}
		missing = append(missing, t.name)
		if !contains(fixes, t.pkg) {
			fixes = append(fixes, t.pkg)
		}
	}
	switch {
	case len(missing) > 0:
		fix := "`sudo apt install " + strings.Join(fixes, " ") + "`"
		if contains(missing, "apt-get") {
			fix += "; without apt (not a Debian-family host), pull images as bundles or from OCI registries instead of building them"
		}
		return warn("tools", fix, "%s not found (%s)", strings.Join(missing, ", "), why)
	case len(offPath) > 0:
		dirs := map[string]bool{}
		var ds []string
		for _, p := range offPath {
			if d := filepath.Dir(p); !dirs[d] {
				dirs[d] = true
				ds = append(ds, d)
			}
		}
		return warn("tools", "add "+strings.Join(ds, ":")+" to PATH (for example in your shell profile), then `banger daemon restart`",
			"%s found but not on PATH, where bangerd looks (%s)", strings.Join(offPath, ", "), why)
	}
	return ok("tools", "%s are on PATH", strings.Join(names, ", "))
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}
