package rpc

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// TestSnapshotWireNames pins the JSON names of the snapshot wire types:
// `banger snapshot ls -o json` shows them to scripts, and a CLI and a
// daemon of neighbouring builds must read each other's.
func TestSnapshotWireNames(t *testing.T) {
	sn := Snapshot{Name: "base", ID: "s1", VM: "dev", VMID: "v1", Image: "img", Kernel: "k", VMM: "qemu",
		VMMVersion: "8.2.2", AgentVersion: "1.0", VCPUs: 2, MemoryBytes: 1 << 30, DiskBytes: 4 << 30, Dir: "/d",
		Files: []string{"qemu.state"}, SizeBytes: 5, State: "ready", Warm: true,
		CreatedAt: time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)}
	b, err := json.Marshal(sn)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"name":"base","id":"s1","vm":"dev","vm_id":"v1","image":"img","kernel":"k","vmm":"qemu",` +
		`"vmm_version":"8.2.2","agent_version":"1.0","vcpus":2,"memory_bytes":1073741824,"disk_bytes":4294967296,` +
		`"dir":"/d","files":["qemu.state"],"size_bytes":5,"state":"ready","warm":true,"created_at":"2026-12-03T08:00:00Z"}`
	if string(b) != want {
		t.Fatalf("snapshot JSON =\n%s\nwant\n%s", b, want)
	}
	var back Snapshot
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, sn) {
		t.Fatalf("round trip = %+v (%v), want %+v", back, err, sn)
	}

	for _, c := range []struct {
		v    any
		want string
	}{
		{SnapshotVMRequest{}, `{}`},
		{SnapshotVMRequest{Name: "base", Stop: true}, `{"name":"base","stop":true}`},
		{CreateVMRequest{Name: "web1", From: "base"}, `{"name":"web1","from":"base"}`},
		{CreateVMRequest{Image: "img", Start: true}, `{"image":"img","start":true}`},
	} {
		b, err := json.Marshal(c.v)
		if err != nil || string(b) != c.want {
			t.Errorf("%T %+v = %s (%v), want %s", c.v, c.v, b, err, c.want)
		}
	}
}
