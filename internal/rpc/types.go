package rpc

import "time"

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
	ID         string    `json:"id"`
	Kind       string    `json:"kind"`
	Target     string    `json:"target"`
	Phase      string    `json:"phase"`
	State      string    `json:"state"`
	Done       int64     `json:"done"`
	Total      int64     `json:"total"`
	Unit       string    `json:"unit,omitempty"`
	Error      string    `json:"error,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
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
