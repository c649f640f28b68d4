package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"banger/internal/daemon/workspace"
)

// benchClone makes a VM's root disk from a 2 GiB ext4 image holding about
// 300 MB with workspace.CloneDisk, against cp of the same file: "copy" on
// the work directory's filesystem, "reflink" on a loop-mounted btrfs.
func benchClone(ctx context.Context, dir string, runs int) error {
	if err := need("mkfs.ext4", "cp", "sync"); err != nil {
		return err
	}
	tree := filepath.Join(dir, "tree")
	progress("clone: writing a 300 MiB tree and a 2 GiB ext4 image")
	if err := writeMixedTree(tree, 300<<20, 2); err != nil {
		return fmt.Errorf("write test tree: %w", err)
	}
	src := filepath.Join(dir, "rootfs.ext4")
	if err := sh(ctx, fmt.Sprintf("mkfs.ext4 -q -F -d %s %s 2G", q(tree), q(src))); err != nil {
		return err
	}
	os.RemoveAll(tree)
	fsType := fsTypeOf(ctx, dir)
	note("Clone: source is a 2 GiB ext4 image made with mkfs.ext4 -d from 300 MiB of files (%s allocated); %d runs each, interleaved. CloneDisk fsyncs the new disk, so the cp baseline is timed with and without `sync FILE`.",
		allocated(ctx, src), runs)
	if err := cloneRuns(ctx, "copy on "+fsType+" ("+dir+")", src, filepath.Join(dir, "vm.ext4"), workspace.Copy,
		"cp --sparse=always", runs); err != nil {
		return err
	}

	// reflink on a loop-mounted btrfs.
	why := ""
	switch {
	case os.Geteuid() != 0:
		why = "mounting a loop btrfs needs root"
	case need("mkfs.btrfs", "mount", "umount") != nil:
		why = "mkfs.btrfs is not installed (apt-get install -y btrfs-progs)"
	}
	if why == "" {
		img := filepath.Join(dir, "btrfs.img")
		mnt := filepath.Join(dir, "btrfs")
		if err := os.MkdirAll(mnt, 0o755); err != nil {
			return err
		}
		err := sh(ctx, fmt.Sprintf("truncate -s 6G %[1]s && mkfs.btrfs -q -f %[1]s && mount -o loop %[1]s %[2]s", q(img), q(mnt)))
		if err != nil {
			why = "could not mount a loop btrfs here: " + err.Error()
		} else {
			defer func() {
				if err := exec.Command("umount", mnt).Run(); err != nil {
					progress("clone: umount %s: %v; unmount it by hand", mnt, err)
				}
			}()
			bsrc := filepath.Join(mnt, "rootfs.ext4")
			if err := sh(ctx, fmt.Sprintf("cp --sparse=always %s %s && sync -f %s", q(src), q(bsrc), q(bsrc))); err != nil {
				return err
			}
			if err := cloneRuns(ctx, "reflink on btrfs (loop)", bsrc, filepath.Join(mnt, "vm.ext4"), workspace.Reflink,
				"cp --reflink=always", runs); err != nil {
				return err
			}
		}
	}
	if why != "" {
		note("Reflink on btrfs: skipped: %s.", why)
	}
	if _, err := os.Stat("/dev/mapper/control"); err != nil {
		note("dmsnap: not measured; this host has no device-mapper (/dev/mapper/control: %v).", err)
	} else {
		note("dmsnap: not measured by this tool (device-mapper snapshots need the daemon's privileged helper).")
	}
	return nil
}

func cloneRuns(ctx context.Context, title, src, dst, strategy, cpCmd string, runs int) error {
	bs := &series{name: "workspace.CloneDisk(" + strategy + ")"}
	cp := &series{name: cpCmd}
	cpSync := &series{name: cpCmd + " && sync FILE"}
	for i := range runs {
		progress("clone: %s run %d/%d", title, i+1, runs)
		os.Remove(dst)
		d, err := timeIt(func() error {
			used, err := workspace.CloneDisk(ctx, src, dst, strategy, workspace.CloneOptions{})
			if err == nil && used != strategy {
				err = fmt.Errorf("CloneDisk used %q, not %q", used, strategy)
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("workspace.CloneDisk %s: %w", strategy, err)
		}
		bs.add(d)
		for _, s := range []*series{cp, cpSync} {
			os.Remove(dst)
			script := fmt.Sprintf("%s %s %s", cpCmd, q(src), q(dst))
			if s == cpSync {
				script += " && sync " + q(dst)
			}
			d, err := timeIt(func() error { return sh(ctx, script) })
			if err != nil {
				return err
			}
			s.add(d)
		}
	}
	os.Remove(dst)
	printTable("Clone: "+title, 0, cpSync.name, bs, cp, cpSync)
	return nil
}

func fsTypeOf(ctx context.Context, dir string) string {
	out, err := exec.CommandContext(ctx, "findmnt", "-n", "-o", "FSTYPE", "-T", dir).Output()
	if err != nil {
		return "unknown fs"
	}
	return strings.TrimSpace(string(out))
}

func allocated(ctx context.Context, path string) string {
	out, err := exec.CommandContext(ctx, "du", "-h", path).Output()
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(out))
	if len(f) == 0 {
		return "unknown"
	}
	return f[0]
}
