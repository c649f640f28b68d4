package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"banger/internal/daemon/opstate"
	"banger/internal/rpc"
	"banger/internal/store"
)

func (d *Daemon) vmRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/vms", d.handleListVMs)
	mux.HandleFunc("POST /v1/vms", d.handleCreateVM)
	mux.HandleFunc("GET /v1/vms/{name}", d.handleGetVM)
	mux.HandleFunc("DELETE /v1/vms/{name}", d.handleRemoveVM)
	mux.HandleFunc("POST /v1/vms/{name}/start", d.handleStartVM)
	mux.HandleFunc("POST /v1/vms/{name}/stop", d.handleStopVM)
	mux.HandleFunc("POST /v1/vms/{name}/restart", d.handleRestartVM)
	mux.HandleFunc("GET /v1/vms/{name}/logs", d.handleVMLogs)
	mux.HandleFunc("GET /v1/vms/{name}/agent", d.handleVMAgent)
	mux.HandleFunc("POST /v1/vms/{name}/hostkeys", d.handleVMHostKeys)
}

func vmAPIError(err error) error {
	var in vmInputError
	if errors.As(err, &in) {
		return &rpc.Error{Code: rpc.CodeBadRequest, Message: err.Error()}
	}
	return apiError(err)
}

func (d *Daemon) wireVM(ctx context.Context, v store.VM) rpc.VM {
	out := rpc.VM{Name: v.Name, ID: v.ID, State: v.State, VCPUs: v.VCPUs, MemoryBytes: v.MemoryBytes,
		DiskBytes: v.DiskBytes, VMM: v.VMMKind, VMMRequested: v.VMMRequested, VMMReason: v.VMMReason, COW: v.COWKind, Disk: v.COWDevice,
		PID: v.PID, SSHPort: v.SSHPort, CreatedAt: v.CreatedAt, StartedAt: v.StartedAt, StoppedAt: v.StoppedAt,
		LastError: v.LastError, KnownHosts: d.vms.knownHosts(v.ID), Network: v.Network, IP: v.IP, Tap: v.Tap,
		Publish: publishText(v.Publish)}
	if im, err := d.store.GetImageByID(ctx, v.ImageID); err == nil {
		out.Image = im.Name
	}
	if k, err := d.store.GetKernelByID(ctx, v.KernelID); err == nil {
		out.Kernel = k.Name
	}
	out.ConsoleLog = d.vms.consoleLog(v)
	return out
}

func (d *Daemon) handleListVMs(w http.ResponseWriter, r *http.Request) {
	vms, err := d.store.ListVMs(r.Context())
	if err != nil {
		rpc.WriteError(w, err)
		return
	}
	out := make([]rpc.VM, 0, len(vms))
	for _, v := range vms {
		if strings.HasPrefix(v.Name, warmHelperPrefix) {
			continue // the warm pool's helper (vm inspect still shows it)
		}
		out = append(out, d.wireVM(r.Context(), v))
	}
	rpc.WriteJSON(w, http.StatusOK, out)
}

func (d *Daemon) handleGetVM(w http.ResponseWriter, r *http.Request) {
	v, err := d.store.GetVM(r.Context(), r.PathValue("name"))
	if err != nil {
		rpc.WriteError(w, vmAPIError(err))
		return
	}
	rpc.WriteJSON(w, http.StatusOK, d.wireVM(r.Context(), v))
}

func (d *Daemon) handleCreateVM(w http.ResponseWriter, r *http.Request) {
	var req rpc.CreateVMRequest
	if !decode(w, r, &req) {
		return
	}
	cr := CreateRequest{Name: req.Name, Image: req.Image, VCPUs: req.VCPUs, Memory: req.Memory, Disk: req.Disk, VMM: req.VMM, Publish: req.Publish, StartNow: req.Start, From: req.From}
	if err := d.vms.validate(&cr); err != nil {
		rpc.WriteError(w, vmAPIError(err))
		return
	}
	if _, err := d.store.GetVM(r.Context(), cr.Name); err == nil {
		rpc.WriteError(w, rpc.Errorf(rpc.CodeConflict, "VM %q already exists: pick another name, or remove it (banger vm rm %s)", cr.Name, cr.Name))
		return
	}
	kind := "vm create"
	if req.Start {
		kind = "vm run"
	}
	d.startOp(w, r, kind, cr.Name, func(ctx context.Context, p *opstate.Progress) error {
		if req.Start {
			// vm run: a warm snapshot resumed when one fits (warmpool.go).
			_, err := d.vms.Run(ctx, cr, p)
			return err
		}
		_, err := d.vms.Create(ctx, cr, p)
		return err
	})
}

func (d *Daemon) handleStartVM(w http.ResponseWriter, r *http.Request) {
	var req rpc.StartVMRequest
	if r.ContentLength != 0 && !decode(w, r, &req) {
		return
	}
	name := r.PathValue("name")
	if _, err := d.store.GetVM(r.Context(), name); err != nil {
		rpc.WriteError(w, vmAPIError(err))
		return
	}
	d.startOp(w, r, "vm start", name, func(ctx context.Context, p *opstate.Progress) error {
		_, err := d.vms.Start(ctx, name, req.VMM, p)
		return err
	})
}

func (d *Daemon) handleRestartVM(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if _, err := d.store.GetVM(r.Context(), name); err != nil {
		rpc.WriteError(w, vmAPIError(err))
		return
	}
	d.startOp(w, r, "vm restart", name, func(ctx context.Context, p *opstate.Progress) error {
		p.Phase("stopping")
		if _, err := d.vms.Stop(ctx, name); err != nil {
			return err
		}
		_, err := d.vms.Start(ctx, name, "", p)
		return err
	})
}

func (d *Daemon) handleStopVM(w http.ResponseWriter, r *http.Request) {
	v, err := d.vms.Stop(r.Context(), r.PathValue("name"))
	if err != nil {
		rpc.WriteError(w, vmAPIError(err))
		return
	}
	rpc.WriteJSON(w, http.StatusOK, d.wireVM(r.Context(), v))
}

func (d *Daemon) handleRemoveVM(w http.ResponseWriter, r *http.Request) {
	if err := d.vms.Remove(r.Context(), r.PathValue("name"), r.URL.Query().Get("force") == "1"); err != nil {
		rpc.WriteError(w, vmAPIError(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleVMLogs sends the console log; with ?follow=1 it keeps sending what
// is appended until the client goes away or the VM's run dir is gone.
func (d *Daemon) handleVMLogs(w http.ResponseWriter, r *http.Request) {
	v, err := d.store.GetVM(r.Context(), r.PathValue("name"))
	if err != nil {
		rpc.WriteError(w, vmAPIError(err))
		return
	}
	if v.RunDir == "" {
		rpc.WriteError(w, rpc.Errorf(rpc.CodeNotFound, "VM %q has no console log: it has not been started", v.Name))
		return
	}
	path := d.vms.consoleLog(v)
	f, err := os.Open(path)
	if err != nil {
		rpc.WriteError(w, rpc.Errorf(rpc.CodeNotFound, "VM %q has no console log now (%v): it is not running", v.Name, err))
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	follow := r.URL.Query().Get("follow") == "1"
	buf := make([]byte, 32<<10)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if err == nil {
			continue
		}
		if !errors.Is(err, io.EOF) || !follow {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
		if _, err := os.Stat(path); err != nil {
			return
		}
		// bangerd rotates the log by truncating it in place: go on
		// from its new start.
		if off, err := f.Seek(0, io.SeekCurrent); err == nil {
			if fi, err := f.Stat(); err == nil && fi.Size() < off {
				f.Seek(0, io.SeekStart)
			}
		}
	}
}

// handleVMHostKeys records the guest's current SSH host keys in the VM's
// known_hosts. vm ssh asks for it once sshd answers, since an image may
// make its host keys at first boot, after the agent reported ready.
func (d *Daemon) handleVMHostKeys(w http.ResponseWriter, r *http.Request) {
	link, v, err := d.vms.Agent(r.Context(), r.PathValue("name"))
	if err != nil {
		rpc.WriteError(w, vmAPIError(err))
		return
	}
	if err := d.vms.recordHostKeys(r.Context(), v, link); err != nil {
		rpc.WriteError(w, rpc.Errorf(rpc.CodeUnavailable, "record the SSH host keys of %s: %v", v.Name, err))
		return
	}
	rpc.WriteJSON(w, http.StatusOK, d.wireVM(r.Context(), v))
}

// handleVMAgent turns the request's connection into one guest-agent stream
// of a running VM, so the CLI speaks the agent protocol end to end (exec,
// pty, copy, forward) and the daemon only splices bytes.
func (d *Daemon) handleVMAgent(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Upgrade") != rpc.UpgradeAgent {
		rpc.WriteError(w, rpc.Errorf(rpc.CodeBadRequest, "this endpoint needs Upgrade: %s", rpc.UpgradeAgent))
		return
	}
	link, _, err := d.vms.Agent(r.Context(), r.PathValue("name"))
	if err != nil {
		rpc.WriteError(w, vmAPIError(err))
		return
	}
	octx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	agent, err := link.Open(octx)
	cancel()
	if err != nil {
		rpc.WriteError(w, rpc.Errorf(rpc.CodeUnavailable, "reach the guest agent of %s: %v", r.PathValue("name"), err))
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		agent.Close()
		rpc.WriteError(w, errors.New("connection cannot be taken over"))
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		agent.Close()
		return
	}
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\n\r\n", rpc.UpgradeAgent)
	if err := brw.Flush(); err != nil {
		conn.Close()
		agent.Close()
		return
	}
	splice(conn, brw.Reader, agent)
}

// splice copies both ways until both directions are done, passing a
// half-close on where the connection supports it.
func splice(client net.Conn, clientR *bufio.Reader, agent net.Conn) {
	done := make(chan struct{}, 2)
	go func() {
		_, _ = io.Copy(agent, clientR)
		closeWrite(agent)
		done <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(client, agent)
		closeWrite(client)
		done <- struct{}{}
	}()
	<-done
	<-done
	client.Close()
	agent.Close()
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

// publishText is the API's form of published ports: "HOST:GUEST,...".
func publishText(ps []store.PortMap) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}
