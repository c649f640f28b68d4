package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	"banger/internal/daemon/imagemgr"
	"banger/internal/daemon/opstate"
	"banger/internal/rpc"
	"banger/internal/store"
)

func (d *Daemon) imageRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/kernels", d.handleListKernels)
	mux.HandleFunc("GET /v1/kernels/{name}", d.handleGetKernel)
	mux.HandleFunc("DELETE /v1/kernels/{name}", d.handleRemoveKernel)
	mux.HandleFunc("POST /v1/kernels/import", d.handleImportKernel)
	mux.HandleFunc("POST /v1/kernels/pull", d.handlePullKernel)
	mux.HandleFunc("POST /v1/images/pull", d.handlePullImage)
	mux.HandleFunc("POST /v1/images/build", d.handleBuildImage)
	mux.HandleFunc("GET /v1/images", d.handleListImages)
	mux.HandleFunc("GET /v1/images/{name}", d.handleGetImage)
	mux.HandleFunc("DELETE /v1/images/{name}", d.handleRemoveImage)
	mux.HandleFunc("POST /v1/images/register", d.handleRegisterImage)
	mux.HandleFunc("POST /v1/images/{name}/promote", d.handlePromoteImage)
}

// apiError gives errors of the image and kernel layer their API code.
func apiError(err error) error {
	var in *imagemgr.InputError
	var used *store.InUseError
	switch {
	case errors.As(err, &in):
		return &rpc.Error{Code: rpc.CodeBadRequest, Message: err.Error()}
	case errors.As(err, &used), errors.Is(err, store.ErrExists):
		return &rpc.Error{Code: rpc.CodeConflict, Message: err.Error()}
	case errors.Is(err, store.ErrNotFound):
		return &rpc.Error{Code: rpc.CodeNotFound, Message: err.Error()}
	}
	return err
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(v); err != nil {
		rpc.WriteError(w, rpc.Errorf(rpc.CodeBadRequest, "decode request: %v", err))
		return false
	}
	return true
}

func wireKernel(k store.Kernel) rpc.Kernel {
	return rpc.Kernel{Name: k.Name, ID: k.ID, Version: k.Version, Managed: k.Managed, Vmlinux: k.VmlinuxPath,
		Initrd: k.InitrdPath, Modules: k.Modules, Digest: k.Digest, OriginKind: k.OriginKind,
		OriginRef: k.OriginRef, CreatedAt: k.CreatedAt}
}

func wireImage(im store.Image) rpc.Image {
	return rpc.Image{Name: im.Name, ID: im.ID, Managed: im.Managed, Rootfs: im.RootfsPath, WorkSeed: im.WorkSeedPath,
		Kernel: im.KernelRef, Initrd: im.InitrdPath, Modules: im.ModulesDir, Digest: im.Digest,
		SizeBytes: im.SizeBytes, OriginKind: im.OriginKind, OriginRef: im.OriginRef, CreatedAt: im.CreatedAt}
}

func (d *Daemon) handleListKernels(w http.ResponseWriter, r *http.Request) {
	ks, err := d.images.Kernels(r.Context())
	if err != nil {
		rpc.WriteError(w, err)
		return
	}
	out := make([]rpc.Kernel, 0, len(ks))
	for _, k := range ks {
		out = append(out, wireKernel(k))
	}
	rpc.WriteJSON(w, http.StatusOK, out)
}

func (d *Daemon) handleGetKernel(w http.ResponseWriter, r *http.Request) {
	k, err := d.images.Kernel(r.Context(), r.PathValue("name"))
	if err != nil {
		rpc.WriteError(w, apiError(err))
		return
	}
	rpc.WriteJSON(w, http.StatusOK, wireKernel(k))
}

func (d *Daemon) handleRemoveKernel(w http.ResponseWriter, r *http.Request) {
	if err := d.images.RemoveKernel(r.Context(), r.PathValue("name")); err != nil {
		rpc.WriteError(w, apiError(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (d *Daemon) handleImportKernel(w http.ResponseWriter, r *http.Request) {
	var req rpc.ImportKernelRequest
	if !decode(w, r, &req) {
		return
	}
	if req.Name != "" {
		if err := imagemgr.ValidName("kernel", req.Name); err != nil {
			rpc.WriteError(w, apiError(err))
			return
		}
	}
	if _, err := os.Stat(req.Path); err != nil || !filepath.IsAbs(req.Path) {
		rpc.WriteError(w, rpc.Errorf(rpc.CodeBadRequest, "kernel source %q: not an existing absolute path (%v)", req.Path, err))
		return
	}
	target := req.Name
	if target == "" {
		target = req.Path
	}
	d.startOp(w, r, "kernel import", target, func(ctx context.Context, p *opstate.Progress) error {
		_, err := d.images.ImportKernel(ctx, req.Name, req.Path, p)
		return err
	})
}

func (d *Daemon) handlePullKernel(w http.ResponseWriter, r *http.Request) {
	var req rpc.PullRequest
	if !decode(w, r, &req) {
		return
	}
	if err := imagemgr.ValidName("kernel", req.Ref); err != nil {
		rpc.WriteError(w, apiError(err))
		return
	}
	d.startOp(w, r, "kernel pull", req.Ref, func(ctx context.Context, p *opstate.Progress) error {
		_, err := d.images.PullKernel(ctx, req.Ref, p)
		return err
	})
}

func (d *Daemon) handlePullImage(w http.ResponseWriter, r *http.Request) {
	var req rpc.PullRequest
	if !decode(w, r, &req) {
		return
	}
	if req.Ref == "" {
		rpc.WriteError(w, rpc.Errorf(rpc.CodeBadRequest, "image pull needs a catalog name or an OCI reference"))
		return
	}
	if req.Name != "" {
		if err := imagemgr.ValidName("image", req.Name); err != nil {
			rpc.WriteError(w, apiError(err))
			return
		}
	}
	o := imagemgr.PullOptions{Name: req.Name, Insecure: req.Insecure, Kernel: req.Kernel, DefaultKernel: d.defaultKernel}
	// Refuse a bad kernel now, before an operation is even recorded.
	if _, err := d.images.CheckPull(r.Context(), req.Ref, o); err != nil {
		rpc.WriteError(w, apiError(err))
		return
	}
	d.startOp(w, r, "image pull", req.Ref, func(ctx context.Context, p *opstate.Progress) error {
		_, err := d.images.PullImage(ctx, req.Ref, o, p)
		return err
	})
}

// defaultKernel is the kernel an OCI image or a registered image boots when
// its pull or register names none:
// the kernel of the default image (default_image_name), which for a catalog
// image is the kernel its catalog entry names. The image manager does not
// know the configuration; the daemon composes the rule here.
func (d *Daemon) defaultKernel(ctx context.Context) (string, error) {
	name := d.opts.Config.DefaultImageName
	k, err := d.images.ImageKernel(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return "", &imagemgr.InputError{Err: fmt.Errorf("no --kernel given, and the default image %q (default_image_name) is neither a catalog image nor installed, so it names no kernel to boot images with: give one with --kernel NAME (banger kernel ls lists them), or set default_image_name", name)}
	}
	if err != nil {
		return "", err
	}
	if k == "" {
		return "", &imagemgr.InputError{Err: fmt.Errorf("no --kernel given, and the default image %q (default_image_name) names no kernel to boot images with: give one with --kernel NAME (banger kernel ls lists them)", name)}
	}
	return k, nil
}

func (d *Daemon) handleBuildImage(w http.ResponseWriter, r *http.Request) {
	var req rpc.PullRequest
	if !decode(w, r, &req) {
		return
	}
	if !d.images.IsCatalogImage(req.Ref) {
		rpc.WriteError(w, rpc.Errorf(rpc.CodeBadRequest, "%q is not a catalog image: only catalog images have build recipes", req.Ref))
		return
	}
	if req.Kernel != "" {
		rpc.WriteError(w, rpc.Errorf(rpc.CodeBadRequest, "image build %s: a catalog image boots the kernel its catalog entry names; a kernel cannot be given", req.Ref))
		return
	}
	d.startOp(w, r, "image build", req.Ref, func(ctx context.Context, p *opstate.Progress) error {
		_, err := d.images.BuildImage(ctx, req.Ref, p)
		return err
	})
}

func (d *Daemon) handleListImages(w http.ResponseWriter, r *http.Request) {
	ims, err := d.images.Images(r.Context())
	if err != nil {
		rpc.WriteError(w, err)
		return
	}
	out := make([]rpc.Image, 0, len(ims))
	for _, im := range ims {
		out = append(out, wireImage(im))
	}
	rpc.WriteJSON(w, http.StatusOK, out)
}

func (d *Daemon) handleGetImage(w http.ResponseWriter, r *http.Request) {
	im, err := d.images.Image(r.Context(), r.PathValue("name"))
	if err != nil {
		rpc.WriteError(w, apiError(err))
		return
	}
	rpc.WriteJSON(w, http.StatusOK, wireImage(im))
}

func (d *Daemon) handleRemoveImage(w http.ResponseWriter, r *http.Request) {
	if err := d.images.RemoveImage(r.Context(), r.PathValue("name")); err != nil {
		rpc.WriteError(w, apiError(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (d *Daemon) handleRegisterImage(w http.ResponseWriter, r *http.Request) {
	var req rpc.RegisterImageRequest
	if !decode(w, r, &req) {
		return
	}
	im, err := d.images.RegisterImage(r.Context(), imagemgr.RegisterRequest{
		Name: req.Name, Rootfs: req.Rootfs, WorkSeed: req.WorkSeed, Kernel: req.Kernel,
		Initrd: req.Initrd, ModulesDir: req.Modules, DefaultKernel: d.defaultKernel,
	})
	if err != nil {
		rpc.WriteError(w, apiError(err))
		return
	}
	rpc.WriteJSON(w, http.StatusCreated, wireImage(im))
}

func (d *Daemon) handlePromoteImage(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	im, err := d.images.Image(r.Context(), name)
	if err != nil {
		rpc.WriteError(w, apiError(err))
		return
	}
	if im.Managed {
		rpc.WriteError(w, rpc.Errorf(rpc.CodeBadRequest, "image %q is already managed", name))
		return
	}
	d.startOp(w, r, "image promote", name, func(ctx context.Context, p *opstate.Progress) error {
		_, err := d.images.PromoteImage(ctx, name, p)
		return err
	})
}

// startOp starts fn as an operation and answers with it.
func (d *Daemon) startOp(w http.ResponseWriter, r *http.Request, kind, target string, fn opstate.Func) {
	op, err := d.ops.Start(r.Context(), kind, target, fn)
	if err != nil {
		rpc.WriteError(w, rpc.Errorf(rpc.CodeUnavailable, "%v", err))
		return
	}
	rpc.WriteJSON(w, http.StatusAccepted, wireOp(op))
}
