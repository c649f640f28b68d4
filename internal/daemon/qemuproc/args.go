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
	// blockDevs marks the drives that are block devices (QEMU's
	// host_device driver), by index.
	blockDevs []bool
}

func (p *plan) blockDev(i int) bool { return i < len(p.blockDevs) && p.blockDevs[i] }

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

// Sandbox is QEMU's seccomp filter, always on: no obsolete system calls,
// no change of user or group, no fork or exec, no change of scheduling or
// CPU affinity.
const Sandbox = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"

// The descriptors QEMU is given, in the order of exec.Cmd.ExtraFiles: it
// opens nothing of the VM's by path, so it needs no access to the runtime
// or state directory and can run as a user of its own.
const (
	fdQMP     = 3 // listening socket of the QMP monitor
	fdAgent   = 4 // listening socket of the agent's port
	fdConsole = 5 // console log, opened for appending
	fdKernel  = 6 // read through /proc/self/fd
)

func (p *plan) fdInitrd() int { return fdKernel + 1 }

// fdDrive is the first of drive i's two descriptors: QEMU opens a drive
// read-only first and then again for writing, and takes each from the
// drive's fdset by its access mode, so the set holds one of each (two
// read-only ones for a read-only drive).
func (p *plan) fdDrive(i int) int {
	if p.cfg.Initrd != "" {
		return fdKernel + 2 + 2*i
	}
	return fdKernel + 1 + 2*i
}

func (p *plan) fdTap() int { return p.fdDrive(len(p.cfg.Drives)) }

// fdset numbers of -add-fd.
const (
	setConsole = 1
	setDrive0  = 10
)

func procFD(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// NameMarker is the -name QEMU runs with: it names the runtime directory,
// so that Adopt and a sweep for strays can recognise a VM's QEMU by its
// command line.
func NameMarker(dir string) string { return "guest=" + optEscape(strings.TrimRight(dir, "/")+"/") }

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
		"-sandbox", Sandbox,
		"-name", NameMarker(c.Dir),
		"-kernel", procFD(fdKernel),
	}
	if c.Initrd != "" {
		a = append(a, "-initrd", procFD(p.fdInitrd()))
	}
	a = append(a,
		"-append", kernelCmdline(c.Cmdline, p.tscKHz),
		"-add-fd", fmt.Sprintf("fd=%d,set=%d,opaque=%s", fdConsole, setConsole, optEscape(ConsoleLogPath(c.Dir))),
		"-chardev", fmt.Sprintf("file,id=console,path=/dev/fdset/%d,append=on", setConsole),
		"-serial", "chardev:console",
		"-chardev", fmt.Sprintf("socket,id=qmp,fd=%d,server=on,wait=off", fdQMP),
		"-mon", "chardev=qmp,mode=control",
	)
	for i, d := range c.Drives {
		id := fmt.Sprintf("vd%d", i)
		set := setDrive0 + i
		for fd := p.fdDrive(i); fd < p.fdDrive(i+1); fd++ {
			a = append(a, "-add-fd", fmt.Sprintf("fd=%d,set=%d,opaque=%s", fd, set, optEscape(d.Path)))
		}
		drive := fmt.Sprintf("id=%s,file=/dev/fdset/%d,format=raw,if=none", id, set)
		if p.blockDev(i) {
			drive = fmt.Sprintf("id=%s,format=raw,if=none,file.driver=host_device,file.filename=/dev/fdset/%d", id, set)
		}
		if d.ReadOnly {
			drive += ",readonly=on"
		}
		drive += driveLocking
		a = append(a, "-drive", drive, "-device", "virtio-blk-device,drive="+id)
	}
	switch {
	case c.Net.Tap != nil:
		a = append(a, "-netdev", fmt.Sprintf("tap,id=n0,fd=%d", p.fdTap()),
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
		"-chardev", fmt.Sprintf("socket,id=agent,fd=%d,server=on,wait=off", fdAgent),
		"-device", "virtserialport,chardev=agent,name="+AgentPortName,
	)
	return append(a, p.incomingArgs()...)
}

func macOpt(mac string) string {
	if mac == "" {
		return ""
	}
	return ",mac=" + strings.ToLower(mac)
}
