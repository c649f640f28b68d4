package qemuproc

import (
	"strings"
	"testing"

	"banger/internal/daemon/vmm"
)

func TestDriverConfig(t *testing.T) {
	d := NewDriver("/bin/qemu")
	spec := vmm.Spec{RunDir: "/run/x", Kernel: "/k", Params: []string{"root=/dev/vda"}, VCPUs: 2, MemoryMiB: 256,
		Drives: []string{"/root.img", "/work.img"}, Net: vmm.Net{Forwards: []vmm.Forward{{HostPort: 8080, GuestPort: 80}}}}
	c := d.config(spec)
	if !strings.Contains(c.Cmdline, "banger.transport=serial") || !strings.Contains(c.Cmdline, "banger.ip="+userNetIP.String()) {
		t.Errorf("user-mode cmdline %q", c.Cmdline)
	}
	if c.Net.User == nil || len(c.Net.User.Forwards) != 2 || c.Net.User.Forwards[0].GuestPort != 22 || c.Net.User.Forwards[1] != (Forward{HostPort: 8080, GuestPort: 80}) {
		t.Errorf("user network %+v", c.Net.User)
	}
	if len(c.Drives) != 2 || c.Drives[0].Path != "/root.img" || c.Binary != "/bin/qemu" || c.VCPUs != 2 || c.MemoryMiB != 256 {
		t.Errorf("config %+v", c)
	}
	if len(spec.Params) != 1 {
		t.Errorf("config changed the spec's params: %q", spec.Params)
	}
	spec.Net = vmm.Net{Tap: "bgtap0", MAC: "02:00:00:00:00:01"}
	c = d.config(spec)
	if c.Net.Tap == nil || c.Net.Tap.Name != "bgtap0" || c.Net.User != nil || strings.Contains(c.Cmdline, "banger.ip=") {
		t.Errorf("bridged config %+v, cmdline %q", c.Net, c.Cmdline)
	}
	if _, err := d.Usable(vmm.Host{}); err != nil || d.Name() != vmm.QEMU || !d.UserNetwork() {
		t.Error("QEMU is not usable everywhere")
	}
}
