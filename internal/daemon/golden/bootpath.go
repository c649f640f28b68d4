package golden

import (
	"errors"
	"io/fs"
	"os"
	"path"
)

// GuestPiecesVersion numbers what Customize puts in an image (the agent's
// units, the masks below, sshd's host keys). It is written into the
// image's manifest.json as "guest_pieces"; raise it when any of these
// change, so that an image built before can be told apart from a new one.
// Version 2: the agent starts at the beginning of the boot, the units
// below are masked, sshd makes an ed25519 host key only, /tmp is not
// emptied at boot.
const GuestPiecesVersion = 2

// Mask is a systemd unit or generator the image build masks (a link to
// /dev/null in /etc, which `systemctl unmask` undoes), with why a banger
// VM's boot does without it.
type Mask struct {
	Name, Why string
}

// MaskedUnits are kept out of the boot path of banger's catalog images.
// Each either does nothing in a banger VM or does something banger's agent
// already does, and costs a process (or a minute of CPU, for e2scrub_reap)
// under emulation.
var MaskedUnits = []Mask{
	{"apt-daily.timer", "fetches package lists in the background; a VM updates when asked (apt-get update)"},
	{"apt-daily-upgrade.timer", "upgrades packages in the background; same reason"},
	{"dpkg-db-backup.timer", "daily backup of dpkg's database; nothing worth keeping in a disposable VM"},
	{"e2scrub_all.timer", "checks ext4 filesystems on LVM snapshots; banger VMs have no LVM"},
	{"e2scrub_reap.service", "removes stale e2scrub LVM snapshots; no LVM, and it is seconds of CPU at boot"},
	{"networking.service", "ifupdown; the agent configures eth0 from banger.ip and systemd brings lo up itself"},
	{"ifupdown-pre.service", "waits for udev to settle for ifupdown, which no longer runs"},
	{"ifupdown-wait-online.service", "waits for ifupdown's interfaces, which no longer run"},
	{"getty@tty1.service", "a login prompt on a display banger VMs do not have"},
	{"modprobe@.service", "the image has no modprobe (kmod is not installed); the initramfs loads the modules banger needs"},
	{"systemd-modules-load.service", "the image has no /lib/modules: the initramfs loads the modules banger needs"},
	{"sys-kernel-debug.mount", "debugfs; mount it by hand when debugging"},
	{"sys-kernel-tracing.mount", "tracefs; mount it by hand when tracing"},
	{"dev-hugepages.mount", "huge pages are not set up in banger VMs"},
}

// MaskedGenerators are systemd generators that find nothing to do in a
// banger VM; each is a program systemd runs before it starts any unit.
var MaskedGenerators = []Mask{
	{"systemd-gpt-auto-generator", "the root disk is named on the kernel command line, not found in a GPT"},
	{"systemd-cryptsetup-generator", "no encrypted disks"},
	{"systemd-integritysetup-generator", "no dm-integrity disks"},
	{"systemd-veritysetup-generator", "no dm-verity disks"},
	{"systemd-hibernate-resume-generator", "no swap, no hibernation"},
	{"systemd-system-update-generator", "no offline updates"},
	{"systemd-sysv-generator", "every init script in the image has a native unit"},
	{"systemd-getty-generator", "the serial console is a log file nobody can type into; vm ssh and vm exec are the ways in"},
}

// maskBootPath links each of MaskedUnits and MaskedGenerators to /dev/null
// in the tree's /etc, replacing whatever was there.
func maskBootPath(r *os.Root) error {
	for _, set := range []struct {
		dir   string
		masks []Mask
	}{{"etc/systemd/system", MaskedUnits}, {"etc/systemd/system-generators", MaskedGenerators}} {
		if err := r.MkdirAll(set.dir, 0o755); err != nil {
			return err
		}
		for _, m := range set.masks {
			link := path.Join(set.dir, m.Name)
			if err := r.Remove(link); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			if err := r.Symlink("/dev/null", link); err != nil {
				return err
			}
		}
	}
	return nil
}

// tmpConf overrides systemd's tmp.conf, whose "D /tmp" empties /tmp when
// systemd-tmpfiles-setup runs. That is after the agent says ready now, so
// a file put in /tmp by `vm cp` or `vm exec` right after `vm start` could
// vanish. A new VM's /tmp is empty anyway (the image's is); a restarted VM
// keeps its /tmp.
const tmpConf = "# Written by banger: /tmp is not emptied at boot. systemd-tmpfiles-setup runs\n" +
	"# after banger's agent is ready, and would remove what vm cp or vm exec\n" +
	"# put there in the meantime. A new VM's /tmp is empty anyway.\n" +
	"d /tmp 1777 root root -\n"

// sshHostKeyConf makes sshd use one host key, ed25519, made on the VM's
// first boot: `ssh-keygen -A` also makes an RSA key, which takes seconds
// of CPU under emulation.
const (
	sshdHostKeyLine  = "HostKey /etc/ssh/ssh_host_ed25519_key\n"
	sshHostKeyDropIn = "# Written by banger: each VM makes its own SSH host key (ed25519 only:\n" +
		"# an RSA key takes seconds to make under emulation) at first boot, before\n" +
		"# the unit's own configuration check (which needs it).\n" +
		"[Service]\n" +
		"ExecStartPre=\n" +
		"ExecStartPre=/bin/sh -c 'test -s /etc/ssh/ssh_host_ed25519_key || exec /usr/bin/ssh-keygen -q -t ed25519 -N \"\" -f /etc/ssh/ssh_host_ed25519_key'\n" +
		"ExecStartPre=/usr/sbin/sshd -t\n"
)
