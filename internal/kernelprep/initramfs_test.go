package kernelprep

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/guest/initrd"
	"banger/internal/kernelprep/newc"
)

func readArchive(t *testing.T, data []byte) (map[string]*newc.Header, map[string][]byte, []string) {
	t.Helper()
	hdrs, bodies := map[string]*newc.Header{}, map[string][]byte{}
	var order []string
	r := newc.NewReader(bytes.NewReader(data))
	for {
		h, err := r.Next()
		if err == io.EOF {
			return hdrs, bodies, order
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		hdrs[h.Name], bodies[h.Name] = h, b
		order = append(order, h.Name)
	}
}

func TestBuildInitramfs(t *testing.T) {
	dir := t.TempDir()
	initBin := filepath.Join(dir, "init")
	initData := testELF(t, 5000, elf.EM_X86_64)
	os.WriteFile(initBin, initData, 0o755)
	writeModules(t, dir, mod("m/virtio_ring.ko.xz", ""), mod("m/virtio.ko.zst", ""), mod("m/virtio-blk.ko", "virtio,virtio_ring"))
	paths, err := ModuleOrder(filepath.Join(dir, "m"), []string{"virtio_blk"})
	if err != nil {
		t.Fatal(err)
	}
	for _, gz := range []bool{false, true} {
		var b bytes.Buffer
		if err := BuildInitramfs(&b, InitramfsOptions{Init: initBin, Modules: paths, Gzip: gz}); err != nil {
			t.Fatal(err)
		}
		data := b.Bytes()
		if gz {
			zr, err := gzip.NewReader(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			if data, err = io.ReadAll(zr); err != nil {
				t.Fatal(err)
			}
		}
		hdrs, bodies, _ := readArchive(t, data)
		for _, d := range []string{"dev", "proc", "sys", "newroot"} {
			if h := hdrs[d]; h == nil || h.Type() != newc.TypeDir {
				t.Errorf("no directory %s", d)
			}
		}
		if h := hdrs["dev/console"]; h == nil || h.Type() != newc.TypeChar || h.RDevMajor != 5 || h.RDevMinor != 1 {
			t.Errorf("dev/console missing or wrong: %+v", h)
		}
		if h := hdrs["init"]; h == nil || h.Mode != newc.TypeReg|0o755 || !bytes.Equal(bodies["init"], initData) {
			t.Errorf("init missing or wrong")
		}
		manifest := initrd.ParseManifest(string(bodies[strings.TrimPrefix(initrd.ManifestPath, "/")]))
		want := []string{initrd.ModulesDir + "/virtio.ko", initrd.ModulesDir + "/virtio_ring.ko", initrd.ModulesDir + "/virtio_blk.ko"}
		if strings.Join(manifest, " ") != strings.Join(want, " ") {
			t.Fatalf("manifest %v, want %v", manifest, want)
		}
		for _, p := range manifest {
			body := bodies[strings.TrimPrefix(p, "/")]
			mi, err := modinfoFromELF(body)
			if err != nil {
				t.Fatalf("%s is not a plain module: %v", p, err)
			}
			if mi.First("name")+".ko" != filepath.Base(p) {
				t.Fatalf("%s holds module %s", p, mi.First("name"))
			}
		}
	}
	// Deterministic output.
	var a, b bytes.Buffer
	BuildInitramfs(&a, InitramfsOptions{Init: initBin, Modules: paths, Gzip: true})
	BuildInitramfs(&b, InitramfsOptions{Init: initBin, Modules: paths, Gzip: true})
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("two builds from the same inputs differ")
	}
}

func TestBuildInitramfsCPIOTool(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio not installed (apt package cpio); cannot cross-check the initramfs")
	}
	dir := t.TempDir()
	initBin := filepath.Join(dir, "init")
	os.WriteFile(initBin, testELF(t, 500, elf.EM_X86_64), 0o755)
	writeModules(t, dir, mod("m/ext4.ko.xz", ""))
	var b bytes.Buffer
	if err := BuildInitramfs(&b, InitramfsOptions{Init: initBin, Modules: []string{filepath.Join(dir, "m", "ext4.ko.xz")}}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("cpio", "-t", "--quiet")
	cmd.Stdin = &b
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v\n%s", err, out)
	}
	for _, want := range []string{"init", "dev/console", "newroot", strings.TrimPrefix(initrd.ManifestPath, "/"), strings.TrimPrefix(initrd.ModulesDir, "/") + "/ext4.ko"} {
		if !strings.Contains("\n"+string(out), "\n"+want+"\n") {
			t.Errorf("cpio -t does not list %s:\n%s", want, out)
		}
	}
}

func TestBuildInitramfsRefuses(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "init")
	os.WriteFile(good, testELF(t, 500, elf.EM_X86_64), 0o755)
	arm := filepath.Join(dir, "arm")
	os.WriteFile(arm, testELF(t, 500, elf.EM_AARCH64), 0o755)
	writeModules(t, dir, mod("a.ko", ""), mod("b/a.ko.xz", ""))
	cases := map[string]struct {
		opts InitramfsOptions
		want string
	}{
		"no init":      {InitramfsOptions{}, "no init binary"},
		"missing init": {InitramfsOptions{Init: filepath.Join(dir, "nope")}, "reading the init binary"},
		"arm init":     {InitramfsOptions{Init: arm}, "x86_64"},
		"missing mod":  {InitramfsOptions{Init: good, Modules: []string{filepath.Join(dir, "zz.ko")}}, "zz.ko"},
		"twice":        {InitramfsOptions{Init: good, Modules: []string{filepath.Join(dir, "a.ko"), filepath.Join(dir, "b", "a.ko.xz")}}, "listed twice"},
	}
	if sh, err := exec.LookPath("sh"); err == nil {
		if f, err := elf.Open(sh); err == nil {
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP {
					cases["dynamic init"] = struct {
						opts InitramfsOptions
						want string
					}{InitramfsOptions{Init: sh}, "CGO_ENABLED=0"}
				}
			}
			f.Close()
		}
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			err := BuildInitramfs(io.Discard, c.opts)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want mention of %q", err, c.want)
			}
		})
	}
}
