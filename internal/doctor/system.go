package doctor

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// notBuilt explains why the networking checks only warn.
const notBuilt = "needed for bridged networking (network = bridge, and auto as root or with the helper); without it VMs use QEMU user-mode networking"

// dmUsable is the daemon's rule for cow = auto picking dmsnap: as root,
// device-mapper and loop devices here; as a user, the helper says it can.
func (h Host) dmUsable(helper *Helper) bool {
	if h.UID != 0 {
		return helper != nil && helper.Err == nil && helper.Protocol == helper.Want && helper.Snapshots == ""
	}
	return h.exists("/dev/mapper/control") && h.exists("/dev/loop-control")
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

// checkDeviceMapper looks for /dev/mapper/control and the snapshot target.
func checkDeviceMapper(ctx context.Context, h Host) Result {
	const why = "cow = dmsnap, and cow = auto as root or through the helper, use it; without it disks are reflink clones or copies"
	const fix = "`sudo modprobe dm_snapshot` (it loads device-mapper too)"
	if !h.exists("/dev/mapper/control") {
		return warn("device-mapper", fix, "no /dev/mapper/control, so device-mapper is not loaded (%s)", why)
	}
	if h.exists("/sys/module/dm_snapshot") {
		return ok("device-mapper", "/dev/mapper/control and the snapshot target are present (%s)", why)
	}
	if h.UID == 0 {
		if bin, err := h.lookAdmin("dmsetup"); err == nil {
			if out, err := runOutput(ctx, bin, "targets"); err == nil && hasWord(out, "snapshot") {
				return ok("device-mapper", "/dev/mapper/control and the snapshot target are present (%s)", why)
			}
		}
	}
	return warn("device-mapper", fix, "device-mapper is loaded but its snapshot target is not (%s)", why)
}

func hasWord(text, word string) bool {
	for _, l := range strings.Split(text, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == word {
			return true
		}
	}
	return false
}

func checkLoop(h Host) Result {
	if h.exists("/dev/loop-control") {
		return ok("loop", "/dev/loop-control is present (used by dmsnap disks)")
	}
	return warn("loop", "`sudo modprobe loop`", "no /dev/loop-control: loop devices are not available (only dmsnap disks need them)")
}

func checkTun(h Host) Result {
	if !h.exists("/dev/net/tun") {
		return warn("tun", "`sudo modprobe tun`", "no /dev/net/tun: tap devices cannot be made (%s)", notBuilt)
	}
	// A VMM running as this user opens /dev/net/tun to attach to its tap,
	// whoever made the tap.
	f, err := os.OpenFile(h.path("/dev/net/tun"), os.O_RDWR, 0)
	if err != nil {
		return warn("tun", "`sudo chmod 0666 /dev/net/tun` (the kernel's usual mode; the tap's owner still decides who may attach)",
			"/dev/net/tun is not usable by this user (%v): a VMM running as you cannot attach to a tap, so bridged VMs fail to start", err)
	}
	f.Close()
	return ok("tun", "/dev/net/tun opens read-write (%s)", notBuilt)
}

func checkBridge(h Host) Result {
	if h.exists("/sys/module/bridge") || h.exists("/proc/sys/net/bridge") {
		return ok("bridge", "the bridge module is loaded (%s)", notBuilt)
	}
	return warn("bridge", "`sudo modprobe bridge`", "the bridge module is not loaded (%s)", notBuilt)
}

func checkNftables(ctx context.Context, h Host) Result {
	bin, err := h.lookAdmin("nft")
	if err != nil {
		return warn("nftables", "`sudo apt install nftables`", "nft not found (%v): NAT for VMs cannot be set up (%s)", err, notBuilt)
	}
	version := bin + " is found"
	if line, err := firstLine(ctx, bin, "--version"); err == nil {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "nftables" {
			version = fmt.Sprintf("%s is nftables %s", bin, f[1])
		}
	}
	module := "nf_tables is loaded"
	if !h.exists("/sys/module/nf_tables") && !procModulesHas(h, "nf_tables") {
		module = "nf_tables is not loaded yet (the kernel loads it on first use)"
	}
	return ok("nftables", "%s; %s (%s)", version, module, notBuilt)
}

func procModulesHas(h Host, name string) bool {
	data, err := os.ReadFile(h.path("/proc/modules"))
	if err != nil {
		return false
	}
	return hasWord(string(data), name)
}

func checkIPForward(h Host) Result {
	const fix = "`sudo sysctl -w net.ipv4.ip_forward=1` (and net.ipv4.ip_forward = 1 in /etc/sysctl.d/ to keep it)"
	data, err := os.ReadFile(h.path("/proc/sys/net/ipv4/ip_forward"))
	if err != nil {
		return warn("ip-forward", fix, "cannot read net.ipv4.ip_forward: %v (%s)", unwrapPath(err), notBuilt)
	}
	if v := string(bytes.TrimSpace(data)); v != "1" {
		return warn("ip-forward", fix, "net.ipv4.ip_forward is %s: VMs on a bridge could not reach beyond this host (%s)", v, notBuilt)
	}
	return ok("ip-forward", "net.ipv4.ip_forward is 1 (%s)", notBuilt)
}

// checkTools looks for the programs that turn trees into disks and that
// build debian-bookworm locally; the daemon looks for them on PATH.
func checkTools(h Host) Result {
	var missing, offPath []string
	var fixes []string
	for _, t := range []struct{ name, pkg string }{
		{"mkfs.ext4", "e2fsprogs"},
		{"debootstrap", "debootstrap"},
		{"apt-get", "apt"},
	} {
		if _, err := h.lookPath(t.name); err == nil {
			continue
		}
		if p, err := h.lookAdmin(t.name); err == nil {
			offPath = append(offPath, p)
			continue
		}
		missing = append(missing, t.name)
		fixes = append(fixes, t.pkg)
	}
	const why = "mkfs.ext4 makes every image disk (OCI pulls and local builds); debootstrap and apt-get build debian-bookworm and its kernel when their bundles cannot be downloaded"
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
	return ok("tools", "mkfs.ext4, debootstrap and apt-get are on PATH")
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}
