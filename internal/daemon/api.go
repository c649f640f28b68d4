package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"banger/internal/daemon/opstate"
	"banger/internal/rpc"
	"banger/internal/store"
)

func (d *Daemon) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/version", d.handleVersion)
	mux.HandleFunc("POST /v1/daemon/shutdown", d.handleShutdown)
	mux.HandleFunc("GET /v1/ops", d.handleListOps)
	mux.HandleFunc("POST /v1/ops", d.handleStartOp)
	mux.HandleFunc("GET /v1/ops/{id}", d.handleGetOp)
	mux.HandleFunc("GET /v1/ops/{id}/watch", d.handleWatchOp)
	mux.HandleFunc("POST /v1/ops/{id}/cancel", d.handleCancelOp)
	d.imageRoutes(mux)
	d.vmRoutes(mux)
	d.snapshotRoutes(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		rpc.WriteError(w, rpc.Errorf(rpc.CodeNotFound, "bangerd has no endpoint %s %s: the CLI may be newer than the daemon; run `banger daemon restart`", r.Method, r.URL.Path))
	})
	return mux
}

func (d *Daemon) handleVersion(w http.ResponseWriter, _ *http.Request) {
	rpc.WriteJSON(w, http.StatusOK, d.info)
}

func (d *Daemon) handleShutdown(w http.ResponseWriter, _ *http.Request) {
	rpc.WriteJSON(w, http.StatusAccepted, d.info)
	select {
	case <-d.shutdown:
	default:
		close(d.shutdown)
	}
}

func (d *Daemon) handleListOps(w http.ResponseWriter, r *http.Request) {
	o := store.ListOptions{ActiveOnly: r.URL.Query().Get("active") == "1"}
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			rpc.WriteError(w, rpc.Errorf(rpc.CodeBadRequest, "limit %q is not a whole number", s))
			return
		}
		o.Limit = n
	}
	ops, err := d.ops.List(r.Context(), o)
	if err != nil {
		rpc.WriteError(w, err)
		return
	}
	out := make([]rpc.Operation, 0, len(ops))
	for _, op := range ops {
		out = append(out, wireOp(op))
	}
	rpc.WriteJSON(w, http.StatusOK, out)
}

func (d *Daemon) handleStartOp(w http.ResponseWriter, r *http.Request) {
	var req rpc.StartOperationRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil {
		rpc.WriteError(w, rpc.Errorf(rpc.CodeBadRequest, "decode request: %v", err))
		return
	}
	fn, ok := d.opts.DirectKinds[req.Kind]
	if !ok {
		rpc.WriteError(w, rpc.Errorf(rpc.CodeBadRequest, "operation kind %q cannot be started directly", req.Kind))
		return
	}
	d.startOp(w, r, req.Kind, req.Target, fn)
}

func (d *Daemon) handleGetOp(w http.ResponseWriter, r *http.Request) {
	op, err := d.ops.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		rpc.WriteError(w, opError(err))
		return
	}
	rpc.WriteJSON(w, http.StatusOK, wireOp(op))
}

func (d *Daemon) handleCancelOp(w http.ResponseWriter, r *http.Request) {
	op, err := d.ops.Cancel(r.Context(), r.PathValue("id"))
	if err != nil {
		rpc.WriteError(w, opError(err))
		return
	}
	rpc.WriteJSON(w, http.StatusAccepted, wireOp(op))
}

// handleWatchOp streams the operation as newline-delimited JSON, one record
// per change, until it is terminal or the client goes away.
func (d *Daemon) handleWatchOp(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	cur, updates, err := d.ops.Watch(ctx, r.PathValue("id"))
	if err != nil {
		rpc.WriteError(w, opError(err))
		return
	}
	d.log.Debug("watching operation", "id", cur.ID)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	send := func(op opstate.Operation) bool {
		if err := enc.Encode(wireOp(op)); err != nil {
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		return true
	}
	if !send(cur) {
		return
	}
	for op := range updates {
		if !send(op) {
			return
		}
	}
}

func opError(err error) error {
	if errors.Is(err, opstate.ErrNotFound) {
		return &rpc.Error{Code: rpc.CodeNotFound, Message: err.Error()}
	}
	return err
}

func wireOp(op opstate.Operation) rpc.Operation {
	return rpc.Operation{
		ID: op.ID, Kind: op.Kind, Target: op.Target, Phase: op.Phase, State: op.State,
		Done: op.Done, Total: op.Total, Unit: op.Unit, Error: op.Error,
		CreatedAt: op.CreatedAt, UpdatedAt: op.UpdatedAt, FinishedAt: op.FinishedAt,
	}
}
