package qemuproc

import (
	"fmt"
	"strconv"
	"strings"
)

// plan is a checked Config with everything Start decided: the accelerator,
// the TSC frequency and the host ports of the forwards.
type plan struct {
	cfg    Config
	accel  Accel
	tscKHz int       // 0: add nothing
	fwds   []Forward // resolved host ports (user networking only)
}

// optEscape escapes a value for QEMU's comma-separated option syntax.
func optEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// kernelCmdline is the caller's command line plus console=ttyS0 and, when
// tscKHz > 0, tsc_early_khz (unless the caller set one).
func kernelCmdline(base string, tscKHz int) string {
	words := strings.Fields(base)
	has := func(prefix string) bool {
		for _, w := range words {
			if w == prefix || strings.HasPrefix(w, prefix) {
				return true
			}
		}
		return false
	}
	if !has("console=ttyS0") {
		words = append(words, "console=ttyS0")
	}
	if tscKHz > 0 && !has("tsc_early_khz=") {
		words = append(words, "tsc_early_khz="+strconv.Itoa(tscKHz))
	}
	return strings.Join(words, " ")
}

// args is QEMU's argv (without the binary).
func (p *plan) args() []string {
	c := &p.cfg
	cpu := "max"
	if p.accel == AccelKVM {
		cpu = "host"
	}
	a := []string{
		"-M", "microvm,acpi=on",
		"-accel", string(p.accel),
		"-cpu", cpu,
		"-smp", strconv.Itoa(c.VCPUs),
		"-m", strconv.Itoa(c.MemoryMiB) + "M",
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-kernel", c.Kernel,
	}
	if c.Initrd != "" {
		a = append(a, "-initrd", c.Initrd)
	}
	a = append(a,
		"-append", kernelCmdline(c.Cmdline, p.tscKHz),
		"-chardev", "file,id=console,path="+optEscape(ConsoleLogPath(c.Dir)),
		"-serial", "chardev:console",
		"-qmp", "unix:"+QMPSocketPath(c.Dir)+",server=on,wait=off",
	)
	for i, d := range c.Drives {
		id := fmt.Sprintf("vd%d", i)
		drive := "id=" + id + ",file=" + optEscape(d.Path) + ",format=raw,if=none"
		if d.ReadOnly {
			drive += ",readonly=on"
		}
		a = append(a, "-drive", drive, "-device", "virtio-blk-device,drive="+id)
	}
	switch {
	case c.Net.Tap != nil:
		a = append(a, "-netdev", "tap,id=n0,ifname="+c.Net.Tap.Name+",script=no,downscript=no",
			"-device", "virtio-net-device,netdev=n0"+macOpt(c.Net.Tap.MAC))
	case c.Net.User != nil:
		nd := "user,id=n0"
		for _, f := range p.fwds {
			nd += fmt.Sprintf(",hostfwd=tcp:%s:%d-:%d", f.HostAddr, f.HostPort, f.GuestPort)
		}
		a = append(a, "-netdev", nd, "-device", "virtio-net-device,netdev=n0"+macOpt(c.Net.User.MAC))
	}
	a = append(a,
		"-device", "virtio-serial-device",
		"-chardev", "socket,id=agent,path="+AgentSocketPath(c.Dir)+",server=on,wait=off",
		"-device", "virtserialport,chardev=agent,name="+AgentPortName,
	)
	return a
}

func macOpt(mac string) string {
	if mac == "" {
		return ""
	}
	return ",mac=" + strings.ToLower(mac)
}
