package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Origin kinds of images and kernels.
const (
	OriginCatalog  = "catalog"
	OriginOCI      = "oci"
	OriginRegister = "register"
	OriginImport   = "import"
)

// Kernel is a guest kernel: an uncompressed vmlinux with an optional initrd
// and module tree. Managed kernels' files live under the state dir and are
// deleted with the row; unmanaged ones belong to the user.
type Kernel struct {
	ID, Name                         string
	VmlinuxPath, InitrdPath, Modules string
	Version, Digest                  string
	Managed                          bool
	OriginKind, OriginRef            string
	CreatedAt                        time.Time
}

// Image is a root filesystem with what it needs to boot.
type Image struct {
	ID, Name                 string
	Managed                  bool
	RootfsPath, WorkSeedPath string
	KernelRef                string
	InitrdPath, ModulesDir   string
	Digest                   string
	SizeBytes                int64
	OriginKind, OriginRef    string
	CreatedAt                time.Time
}

// ErrExists is returned when a name is already taken.
var ErrExists = errors.New("already exists")

const kernelColumns = `id, name, vmlinux_path, initrd_path, modules_dir, version, digest, managed, origin_kind, origin_ref, created_at`

// PutKernel inserts a kernel, or replaces the one with the same id.
func (s *Store) PutKernel(ctx context.Context, k Kernel) error {
	if k.ID == "" || k.Name == "" || k.VmlinuxPath == "" || k.CreatedAt.IsZero() {
		return fmt.Errorf("kernel %q: id, name, vmlinux path and creation time are required", k.Name)
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO kernels (`+kernelColumns+`) VALUES (?,?,?,?,?,?,?,?,?,?,?)
		ON CONFLICT (id) DO UPDATE SET name=excluded.name, vmlinux_path=excluded.vmlinux_path,
		initrd_path=excluded.initrd_path, modules_dir=excluded.modules_dir, version=excluded.version,
		digest=excluded.digest, managed=excluded.managed, origin_kind=excluded.origin_kind,
		origin_ref=excluded.origin_ref`,
		k.ID, k.Name, k.VmlinuxPath, k.InitrdPath, k.Modules, k.Version, k.Digest, boolInt(k.Managed),
		k.OriginKind, k.OriginRef, formatTime(k.CreatedAt))
	if isUnique(err) {
		return fmt.Errorf("kernel %q: %w", k.Name, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("save kernel %q: %w", k.Name, err)
	}
	return nil
}

func scanKernel(r rowScanner) (Kernel, error) {
	var k Kernel
	var managed int
	var created string
	if err := r.Scan(&k.ID, &k.Name, &k.VmlinuxPath, &k.InitrdPath, &k.Modules, &k.Version, &k.Digest,
		&managed, &k.OriginKind, &k.OriginRef, &created); err != nil {
		return Kernel{}, err
	}
	k.Managed = managed == 1
	t, err := parseTime(created)
	if err != nil {
		return Kernel{}, fmt.Errorf("kernel %q: bad created_at %q: %w", k.Name, created, err)
	}
	k.CreatedAt = t
	return k, nil
}

// GetKernel returns the kernel with the given name.
func (s *Store) GetKernel(ctx context.Context, name string) (Kernel, error) {
	k, err := scanKernel(s.db.QueryRowContext(ctx, `SELECT `+kernelColumns+` FROM kernels WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return Kernel{}, fmt.Errorf("kernel %q: %w", name, ErrNotFound)
	}
	return k, err
}

// ListKernels returns every kernel by name.
func (s *Store) ListKernels(ctx context.Context) ([]Kernel, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+kernelColumns+` FROM kernels ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Kernel
	for rows.Next() {
		k, err := scanKernel(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// DeleteKernel removes the kernel row by name. It fails with the VMs' names
// when VMs still use the kernel.
func (s *Store) DeleteKernel(ctx context.Context, name string) error {
	return s.deleteUnused(ctx, "kernels", "kernel_id", "kernel", name)
}

const imageColumns = `id, name, managed, rootfs_path, work_seed_path, kernel_ref, initrd_path, modules_dir, digest, size_bytes, origin_kind, origin_ref, created_at`

// PutImage inserts an image, or replaces the one with the same id.
func (s *Store) PutImage(ctx context.Context, im Image) error {
	if im.ID == "" || im.Name == "" || im.RootfsPath == "" || im.CreatedAt.IsZero() {
		return fmt.Errorf("image %q: id, name, rootfs path and creation time are required", im.Name)
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO images (`+imageColumns+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)
		ON CONFLICT (id) DO UPDATE SET name=excluded.name, managed=excluded.managed,
		rootfs_path=excluded.rootfs_path, work_seed_path=excluded.work_seed_path,
		kernel_ref=excluded.kernel_ref, initrd_path=excluded.initrd_path, modules_dir=excluded.modules_dir,
		digest=excluded.digest, size_bytes=excluded.size_bytes, origin_kind=excluded.origin_kind,
		origin_ref=excluded.origin_ref`,
		im.ID, im.Name, boolInt(im.Managed), im.RootfsPath, im.WorkSeedPath, im.KernelRef, im.InitrdPath,
		im.ModulesDir, im.Digest, im.SizeBytes, im.OriginKind, im.OriginRef, formatTime(im.CreatedAt))
	if isUnique(err) {
		return fmt.Errorf("image %q: %w", im.Name, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("save image %q: %w", im.Name, err)
	}
	return nil
}

func scanImage(r rowScanner) (Image, error) {
	var im Image
	var managed int
	var created string
	if err := r.Scan(&im.ID, &im.Name, &managed, &im.RootfsPath, &im.WorkSeedPath, &im.KernelRef, &im.InitrdPath,
		&im.ModulesDir, &im.Digest, &im.SizeBytes, &im.OriginKind, &im.OriginRef, &created); err != nil {
		return Image{}, err
	}
	im.Managed = managed == 1
	t, err := parseTime(created)
	if err != nil {
		return Image{}, fmt.Errorf("image %q: bad created_at %q: %w", im.Name, created, err)
	}
	im.CreatedAt = t
	return im, nil
}

// GetImage returns the image with the given name.
func (s *Store) GetImage(ctx context.Context, name string) (Image, error) {
	im, err := scanImage(s.db.QueryRowContext(ctx, `SELECT `+imageColumns+` FROM images WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return Image{}, fmt.Errorf("image %q: %w", name, ErrNotFound)
	}
	return im, err
}

// ListImages returns every image by name.
func (s *Store) ListImages(ctx context.Context) ([]Image, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+imageColumns+` FROM images ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Image
	for rows.Next() {
		im, err := scanImage(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, im)
	}
	return out, rows.Err()
}

// DeleteImage removes the image row by name. It fails with the VMs' names
// when VMs still use the image.
func (s *Store) DeleteImage(ctx context.Context, name string) error {
	return s.deleteUnused(ctx, "images", "image_id", "image", name)
}

// InUseError lists the VMs and snapshots that keep an image or kernel from
// being removed.
type InUseError struct {
	What, Name string
	VMs        []string
	Snapshots  []string
}

func (e *InUseError) Error() string {
	var users, cmds []string
	if len(e.VMs) > 0 {
		users = append(users, "VM "+strings.Join(e.VMs, ", "))
		cmds = append(cmds, "banger vm rm")
	}
	if len(e.Snapshots) > 0 {
		users = append(users, "snapshot "+strings.Join(e.Snapshots, ", "))
		cmds = append(cmds, "banger snapshot rm")
	}
	them := map[bool]string{true: "them", false: "it"}[len(e.VMs)+len(e.Snapshots) > 1]
	return fmt.Sprintf("%s %q is used by %s: remove %s first (%s)", e.What, e.Name,
		strings.Join(users, " and "), them, strings.Join(cmds, ", "))
}

// namesUsing lists the names in table whose column is id.
func namesUsing(ctx context.Context, tx *sql.Tx, table, column, id string) ([]string, error) {
	rows, err := tx.QueryContext(ctx, `SELECT name FROM `+table+` WHERE `+column+` = ? ORDER BY name`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		names = append(names, n)
	}
	return names, rows.Err()
}

// deleteUnused deletes a row of table by name inside one transaction, after
// checking that no VM references it through column.
func (s *Store) deleteUnused(ctx context.Context, table, column, what, name string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var id string
	err = tx.QueryRowContext(ctx, `SELECT id FROM `+table+` WHERE name = ?`, name).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%s %q: %w", what, name, ErrNotFound)
	}
	if err != nil {
		return err
	}
	vms, err := namesUsing(ctx, tx, "vms", column, id)
	if err != nil {
		return err
	}
	snaps, err := namesUsing(ctx, tx, "snapshots", column, id)
	if err != nil {
		return err
	}
	if len(vms) > 0 || len(snaps) > 0 {
		return &InUseError{What: what, Name: name, VMs: vms, Snapshots: snaps}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE id = ?`, id); err != nil {
		return fmt.Errorf("delete %s %q: %w", what, name, err)
	}
	return tx.Commit()
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func isUnique(err error) bool {
	return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed")
}

// GetKernelByID returns the kernel with the given id.
func (s *Store) GetKernelByID(ctx context.Context, id string) (Kernel, error) {
	k, err := scanKernel(s.db.QueryRowContext(ctx, `SELECT `+kernelColumns+` FROM kernels WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Kernel{}, fmt.Errorf("kernel id %q: %w", id, ErrNotFound)
	}
	return k, err
}

// GetImageByID returns the image with the given id.
func (s *Store) GetImageByID(ctx context.Context, id string) (Image, error) {
	im, err := scanImage(s.db.QueryRowContext(ctx, `SELECT `+imageColumns+` FROM images WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Image{}, fmt.Errorf("image id %q: %w", id, ErrNotFound)
	}
	return im, err
}
