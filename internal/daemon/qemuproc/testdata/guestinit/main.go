// Command guestinit is the /sbin/init of the root disk in qemuproc's boot
// test. It reports what the guest sees on the console, greets the host on
// the banger.agent virtio-serial port and powers the guest off when the
// host sends "poweroff".
package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

func say(format string, args ...any) {
	fmt.Fprintf(os.Stdout, "GUESTINIT: "+format+"\n", args...)
}

func main() {
	if m, err := os.ReadFile("/proc/mounts"); err == nil {
		for _, l := range strings.Split(string(m), "\n") {
			if f := strings.Fields(l); len(f) > 2 && f[1] == "/" && f[0] != "rootfs" {
				say("root %s %s", f[0], f[2])
			}
		}
	}
	disks, _ := filepath.Glob("/sys/block/vd*")
	for _, d := range disks {
		ro, _ := os.ReadFile(filepath.Join(d, "ro"))
		say("disk %s ro=%s", filepath.Base(d), strings.TrimSpace(string(ro)))
	}
	port := agentPort()
	if port == "" {
		say("no banger.agent port")
		halt()
	}
	f, err := os.OpenFile(port, os.O_RDWR, 0)
	if err != nil {
		say("open %s: %v", port, err)
		halt()
	}
	say("agent port %s", port)
	fmt.Fprintf(f, "hello from the guest\n")
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if sc.Text() == "poweroff" {
			say("powering off")
			unix.Sync()
			unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
		}
	}
	say("agent port closed: %v", sc.Err())
	halt()
}

// agentPort finds the device node of the virtio-serial port named
// banger.agent (no udev here, so by its sysfs name).
func agentPort() string {
	for i := 0; i < 50; i++ {
		names, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
		for _, n := range names {
			b, _ := os.ReadFile(n)
			if strings.TrimSpace(string(b)) == "banger.agent" {
				return "/dev/" + filepath.Base(filepath.Dir(n))
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return ""
}

func halt() {
	for {
		time.Sleep(time.Hour)
	}
}
