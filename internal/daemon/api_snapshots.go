package daemon

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"banger/internal/daemon/imagemgr"
	"banger/internal/daemon/opstate"
	"banger/internal/rpc"
	"banger/internal/store"
)

func (d *Daemon) snapshotRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/vms/{name}/snapshot", d.handleSnapshotVM)
	mux.HandleFunc("GET /v1/snapshots", d.handleListSnapshots)
	mux.HandleFunc("GET /v1/snapshots/{name}", d.handleGetSnapshot)
	mux.HandleFunc("DELETE /v1/snapshots/{name}", d.handleRemoveSnapshot)
}

// defaultSnapshotName is the name of a snapshot asked for without one:
// the VM's name, cut to leave room, and the UTC time, in a form ValidName
// accepts for any valid VM name.
func defaultSnapshotName(vm string, now time.Time) string {
	stamp := now.UTC().Format("20060102-150405")
	if room := 63 - len(stamp) - 1; len(vm) > room {
		vm = strings.TrimRight(vm[:room], "-.")
	}
	return vm + "-" + stamp
}

func (d *Daemon) wireSnapshot(ctx context.Context, sn store.Snapshot) rpc.Snapshot {
	out := rpc.Snapshot{Name: sn.Name, ID: sn.ID, VM: sn.VMName, VMID: sn.VMID, Image: sn.ImageID, Kernel: sn.KernelID,
		VMM: sn.VMMKind, VMMVersion: sn.VMMVersion, AgentVersion: sn.AgentVersion, VCPUs: sn.VCPUs,
		MemoryBytes: sn.MemoryBytes, DiskBytes: sn.DiskBytes, Dir: sn.Dir, Files: sn.Files, SizeBytes: sn.SizeBytes,
		State: sn.State, Warm: sn.Warm, CreatedAt: sn.CreatedAt}
	if out.Files == nil {
		out.Files = []string{}
	}
	if im, err := d.store.GetImageByID(ctx, sn.ImageID); err == nil {
		out.Image = im.Name
	}
	if k, err := d.store.GetKernelByID(ctx, sn.KernelID); err == nil {
		out.Kernel = k.Name
	}
	return out
}

// handleSnapshotVM starts a "vm snapshot" operation whose target is the
// snapshot's name. What can be refused at once (an unknown or stopped VM,
// a bad or taken name) is refused before any operation starts.
func (d *Daemon) handleSnapshotVM(w http.ResponseWriter, r *http.Request) {
	var req rpc.SnapshotVMRequest
	if r.ContentLength != 0 && !decode(w, r, &req) {
		return
	}
	if req.Name != "" {
		if err := imagemgr.ValidName("snapshot", req.Name); err != nil {
			rpc.WriteError(w, apiError(err))
			return
		}
	}
	v, err := d.store.GetVM(r.Context(), r.PathValue("name"))
	if err != nil {
		rpc.WriteError(w, vmAPIError(err))
		return
	}
	name := req.Name
	if name == "" {
		name = defaultSnapshotName(v.Name, time.Now())
	}
	if _, err := d.store.GetSnapshot(r.Context(), name); err == nil {
		rpc.WriteError(w, rpc.Errorf(rpc.CodeConflict,
			"snapshot %q already exists: pick another name with --name, or remove it (banger snapshot rm %s)", name, name))
		return
	}
	if v.State != store.VMRunning {
		rpc.WriteError(w, rpc.Errorf(rpc.CodeConflict,
			"VM %q is %s: only a running VM can be snapshotted; start it first (banger vm start %s)", v.Name, v.State, v.Name))
		return
	}
	sr := SnapshotRequest{VM: v.Name, Name: name, Stop: req.Stop}
	d.startOp(w, r, "vm snapshot", name, func(ctx context.Context, p *opstate.Progress) error {
		_, err := d.vms.Snapshot(ctx, sr, p)
		return err
	})
}

func (d *Daemon) handleListSnapshots(w http.ResponseWriter, r *http.Request) {
	sns, err := d.store.ListSnapshots(r.Context())
	if err != nil {
		rpc.WriteError(w, fmt.Errorf("list snapshots: %w", err))
		return
	}
	out := make([]rpc.Snapshot, 0, len(sns))
	for _, sn := range sns {
		out = append(out, d.wireSnapshot(r.Context(), sn))
	}
	rpc.WriteJSON(w, http.StatusOK, out)
}

func (d *Daemon) handleGetSnapshot(w http.ResponseWriter, r *http.Request) {
	sn, err := d.store.GetSnapshot(r.Context(), r.PathValue("name"))
	if err != nil {
		rpc.WriteError(w, apiError(err))
		return
	}
	rpc.WriteJSON(w, http.StatusOK, d.wireSnapshot(r.Context(), sn))
}

func (d *Daemon) handleRemoveSnapshot(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if _, err := d.store.GetSnapshot(r.Context(), name); err != nil {
		rpc.WriteError(w, apiError(err))
		return
	}
	if err := d.vms.RemoveSnapshot(r.Context(), name); err != nil {
		rpc.WriteError(w, vmAPIError(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
