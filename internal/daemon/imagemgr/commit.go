package imagemgr

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// uncommittedMark is the file a managed artefact directory carries from the
// moment it is renamed into kernels/ or images/ until its row is recorded.
// A directory that still has it at the next start, with no managed row of
// its id, is provably the work of a daemon that died in between: the sweep
// removes it. Without the mark such a directory would have to be kept, as
// nothing else proves it is garbage.
const uncommittedMark = ".uncommitted"

// place renames the finished artefact directory src to dst, marked
// uncommitted; commit removes the mark once the row is recorded.
func place(src, dst string) error {
	if err := os.WriteFile(filepath.Join(src, uncommittedMark), nil, 0o600); err != nil {
		return fmt.Errorf("mark %s uncommitted: %w", src, err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	return os.Rename(src, dst)
}

// commit removes the uncommitted mark of a placed directory whose row is
// recorded. A mark left by a failure here is removed by the next sweep,
// which finds the row.
func commit(dir string) {
	_ = os.Remove(filepath.Join(dir, uncommittedMark))
}

// sweepUncommitted removes the kernels/ and images/ directories still
// marked uncommitted that no managed row claims, and clears the mark of
// those a row does claim (the daemon died after recording it).
func (m *Manager) sweepUncommitted(ctx context.Context, rep *SweepReport) error {
	owned := map[string]bool{}
	ks, err := m.st.ListKernels(ctx)
	if err != nil {
		return fmt.Errorf("list kernels to sweep uncommitted ones: %w", err)
	}
	for _, k := range ks {
		if k.Managed {
			owned[m.KernelDir(k.ID)] = true
		}
	}
	ims, err := m.st.ListImages(ctx)
	if err != nil {
		return fmt.Errorf("list images to sweep uncommitted ones: %w", err)
	}
	for _, im := range ims {
		if im.Managed {
			owned[m.ImageDir(im.ID)] = true
		}
	}
	var errs []error
	for _, kind := range []string{"kernels", "images"} {
		ents, err := os.ReadDir(filepath.Join(m.root, kind))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, e := range ents {
			dir := filepath.Join(m.root, kind, e.Name())
			if !e.IsDir() || !isID(e.Name()) || m.inProgress(dir) {
				continue
			}
			if _, err := os.Lstat(filepath.Join(dir, uncommittedMark)); err != nil {
				continue
			}
			if owned[dir] {
				commit(dir)
				continue
			}
			// Out of the way under a temporary name first: a removal cut
			// short (a crash, a file that cannot be unlinked) must not
			// leave a directory that lost its mark and would pass for a
			// kernel or image to keep. The next sweep finishes it.
			gone := dir
			trash := filepath.Join(m.root, kind, ".tmp-"+e.Name()+"-uncommitted")
			if err := os.Rename(dir, trash); err == nil {
				gone = trash
			}
			removeTree(gone)
			if _, err := os.Lstat(gone); err == nil {
				errs = append(errs, fmt.Errorf("remove uncommitted %s: %s is still there (remove it by hand)", dir, gone))
				continue
			}
			rep.Removed = append(rep.Removed, dir)
		}
	}
	return errors.Join(errs...)
}
