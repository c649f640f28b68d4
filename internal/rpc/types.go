package rpc

import (
	"time"

	"banger/internal/progress"
)

// HeaderAPIVersion carries the client's API version on every request.
const HeaderAPIVersion = "Banger-Api-Version"

// Error codes returned in ErrorBody.Code.
const (
	CodeAPIMismatch = "api_version_mismatch"
	CodeNotFound    = "not_found"
	CodeBadRequest  = "bad_request"
	CodeConflict    = "conflict"
	CodeInternal    = "internal"
	CodeUnavailable = "unavailable"
)

// VersionInfo answers GET /v1/version.
type VersionInfo struct {
	Version   string    `json:"version"`
	API       int       `json:"api"`
	PID       int       `json:"pid"`
	StateDir  string    `json:"state_dir"`
	Socket    string    `json:"socket"`
	LogFile   string    `json:"log_file"`
	StartedAt time.Time `json:"started_at"`
}

// Operation is the wire form of one long-running operation.
type Operation struct {
	ID         string        `json:"id"`
	Kind       string        `json:"kind"`
	Target     string        `json:"target"`
	Phase      string        `json:"phase"`
	State      string        `json:"state"`
	Done       int64         `json:"done"`
	Total      int64         `json:"total"`
	Unit       progress.Unit `json:"unit,omitempty"`
	Error      string        `json:"error,omitempty"`
	CreatedAt  time.Time     `json:"created_at"`
	UpdatedAt  time.Time     `json:"updated_at"`
	FinishedAt time.Time     `json:"finished_at,omitzero"`
}

// Operation states.
const (
	StateQueued    = "queued"
	StateRunning   = "running"
	StateSucceeded = "succeeded"
	StateFailed    = "failed"
	StateCancelled = "cancelled"
)

// Terminal reports whether the operation has finished, one way or another.
func (o Operation) Terminal() bool {
	switch o.State {
	case StateSucceeded, StateFailed, StateCancelled:
		return true
	}
	return false
}

// StartOperationRequest asks the daemon to start an operation of a kind that
// is registered for direct start (POST /v1/ops).
type StartOperationRequest struct {
	Kind   string `json:"kind"`
	Target string `json:"target"`
}

// ErrorBody is the JSON body of every non-2xx answer.
type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// Kernel is the wire form of a guest kernel.
type Kernel struct {
	Name       string    `json:"name"`
	ID         string    `json:"id"`
	Version    string    `json:"version,omitempty"`
	Managed    bool      `json:"managed"`
	Vmlinux    string    `json:"vmlinux"`
	Initrd     string    `json:"initrd,omitempty"`
	Modules    string    `json:"modules,omitempty"`
	Digest     string    `json:"digest,omitempty"`
	OriginKind string    `json:"origin_kind,omitempty"`
	OriginRef  string    `json:"origin_ref,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
}

// Image is the wire form of an image.
type Image struct {
	Name       string    `json:"name"`
	ID         string    `json:"id"`
	Managed    bool      `json:"managed"`
	Rootfs     string    `json:"rootfs"`
	WorkSeed   string    `json:"work_seed,omitempty"`
	Kernel     string    `json:"kernel,omitempty"`
	Initrd     string    `json:"initrd,omitempty"`
	Modules    string    `json:"modules,omitempty"`
	Digest     string    `json:"digest,omitempty"`
	SizeBytes  int64     `json:"size_bytes"`
	OriginKind string    `json:"origin_kind,omitempty"`
	OriginRef  string    `json:"origin_ref,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
}

// ImportKernelRequest asks for POST /v1/kernels/import. Path is absolute.
type ImportKernelRequest struct {
	Name string `json:"name,omitempty"`
	Path string `json:"path"`
}

// RegisterImageRequest asks for POST /v1/images/register. Paths are absolute.
type RegisterImageRequest struct {
	Name     string `json:"name"`
	Rootfs   string `json:"rootfs"`
	WorkSeed string `json:"work_seed,omitempty"`
	Kernel   string `json:"kernel,omitempty"`
	Initrd   string `json:"initrd,omitempty"`
	Modules  string `json:"modules,omitempty"`
}

// PullRequest asks for POST /v1/images/pull, /v1/images/build or
// /v1/kernels/pull. Ref is a catalog name or, for images, an OCI reference.
type PullRequest struct {
	Ref      string `json:"ref"`
	Name     string `json:"name,omitempty"`
	Insecure bool   `json:"insecure,omitempty"`
	// Kernel is the kernel an OCI image boots (image pull only); empty
	// means the kernel of the daemon's default image.
	Kernel string `json:"kernel,omitempty"`
}

// VM is the wire form of a VM.
type VM struct {
	Name        string `json:"name"`
	ID          string `json:"id"`
	State       string `json:"state"`
	Image       string `json:"image"`
	Kernel      string `json:"kernel"`
	VCPUs       int    `json:"vcpus"`
	MemoryBytes int64  `json:"memory_bytes"`
	DiskBytes   int64  `json:"disk_bytes"`
	// VMM is the VMM the last start resolved the request to ("" before
	// the first start); VMMRequested is what the VM asks for (auto, qemu,
	// firecracker).
	VMM          string    `json:"vmm"`
	VMMRequested string    `json:"vmm_requested,omitempty"`
	VMMReason    string    `json:"vmm_reason,omitempty"`
	COW          string    `json:"cow"`
	Disk         string    `json:"disk"`
	PID          int       `json:"pid,omitempty"`
	SSHPort      int       `json:"ssh_port,omitempty"`
	Network      string    `json:"network,omitempty"`
	IP           string    `json:"ip,omitempty"`
	Tap          string    `json:"tap,omitempty"`
	Publish      string    `json:"publish,omitempty"`
	KnownHosts   string    `json:"known_hosts,omitempty"`
	ConsoleLog   string    `json:"console_log,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
	StartedAt    time.Time `json:"started_at,omitzero"`
	StoppedAt    time.Time `json:"stopped_at,omitzero"`
	LastError    string    `json:"last_error,omitempty"`
}

// CreateVMRequest asks for POST /v1/vms. Zero values take the config's
// defaults. Start boots the VM once it is created (vm run).
type CreateVMRequest struct {
	Name    string   `json:"name,omitempty"`
	Image   string   `json:"image,omitempty"`
	VCPUs   int      `json:"vcpus,omitempty"`
	Memory  int64    `json:"memory,omitempty"`
	Disk    int64    `json:"disk,omitempty"`
	VMM     string   `json:"vmm,omitempty"`
	Publish []string `json:"publish,omitempty"`
	Start   bool     `json:"start,omitempty"`
	// From names a snapshot to make the VM from: its first start resumes
	// the saved guest. Image, VCPUs, Memory, Disk and VMM then come from
	// the snapshot and must be left zero.
	From string `json:"from,omitempty"`
}

// SnapshotVMRequest asks for POST /v1/vms/{name}/snapshot. Name "" lets the
// daemon pick <vm>-<time>; the operation's target is the snapshot's name.
// Stop stops the VM after saving instead of resuming it.
type SnapshotVMRequest struct {
	Name string `json:"name,omitempty"`
	Stop bool   `json:"stop,omitempty"`
}

// Snapshot is the wire form of a saved VM: its memory and device state and
// frozen disks, and what it can only be restored with.
type Snapshot struct {
	Name string `json:"name"`
	ID   string `json:"id"`
	// VM and VMID are the VM it was taken from, which may be gone.
	VM           string    `json:"vm"`
	VMID         string    `json:"vm_id,omitempty"`
	Image        string    `json:"image"`
	Kernel       string    `json:"kernel"`
	VMM          string    `json:"vmm"`
	VMMVersion   string    `json:"vmm_version,omitempty"`
	AgentVersion string    `json:"agent_version,omitempty"`
	VCPUs        int       `json:"vcpus"`
	MemoryBytes  int64     `json:"memory_bytes"`
	DiskBytes    int64     `json:"disk_bytes"`
	Dir          string    `json:"dir"`
	Files        []string  `json:"files"`
	SizeBytes    int64     `json:"size_bytes"`
	State        string    `json:"state"`
	Warm         bool      `json:"warm"`
	CreatedAt    time.Time `json:"created_at"`
}

// StartVMRequest asks for POST /v1/vms/{name}/start.
type StartVMRequest struct {
	VMM string `json:"vmm,omitempty"`
}

// UpgradeAgent is the Upgrade protocol of GET /v1/vms/{name}/agent: after
// "101 Switching Protocols" the connection is one guest-agent stream.
const UpgradeAgent = "banger-agent"
