package kernelprep

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// maxModuleSize bounds one decompressed module.
const maxModuleSize = 256 << 20

// DefaultModules are what a banger guest needs from a modular kernel:
// the virtio-mmio transport, the root disk, the network, the console and
// vsock for the agent, and the root filesystem.
var DefaultModules = []string{
	"virtio_mmio", "virtio_blk", "virtio_net", "virtio_console",
	"vsock", "vmw_vsock_virtio_transport", "ext4",
}

// DefaultOptionalModules are loaded when the kernel has them.
var DefaultOptionalModules = []string{"virtio_pci"}

// Module is one loadable kernel module and what its .modinfo says.
type Module struct {
	Name     string   // module name, with '_' for '-'
	Path     string   // file (.ko, .ko.xz, .ko.zst or .ko.gz)
	Depends  []string // hard dependencies (names)
	SoftPre  []string // softdep "pre:" names or aliases
	SoftPost []string // softdep "post:" names or aliases
	Aliases  []string
}

// Modinfo is the parsed .modinfo section of a module: each key with its
// values in order (keys such as alias repeat).
type Modinfo map[string][]string

// First returns the first value of key, or "".
func (m Modinfo) First(key string) string {
	if v := m[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// ParseModinfo parses the contents of a module's .modinfo section: NUL
// separated key=value strings. Strings without '=' are ignored.
func ParseModinfo(data []byte) Modinfo {
	mi := Modinfo{}
	for _, s := range bytes.Split(data, []byte{0}) {
		k, v, ok := strings.Cut(string(s), "=")
		if !ok || k == "" {
			continue
		}
		mi[k] = append(mi[k], v)
	}
	return mi
}

// ReadModuleFile returns a module's ELF bytes, decompressing .ko.xz,
// .ko.zst and .ko.gz files.
func ReadModuleFile(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = bufio.NewReader(f)
	switch {
	case strings.HasSuffix(p, ".ko"):
	case strings.HasSuffix(p, ".ko.xz"):
		zr, err := xz.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("decompressing module %s: %w", p, err)
		}
		r = zr
	case strings.HasSuffix(p, ".ko.zst"):
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("decompressing module %s: %w", p, err)
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(p, ".ko.gz"):
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("decompressing module %s: %w", p, err)
		}
		r = zr
	default:
		return nil, fmt.Errorf("%s is not a kernel module file (.ko, .ko.xz, .ko.zst or .ko.gz)", p)
	}
	data, err := readLimited(r, maxModuleSize)
	if err != nil {
		return nil, fmt.Errorf("reading module %s: %w", p, err)
	}
	return data, nil
}

// ReadModinfo reads the .modinfo section of a module file.
func ReadModinfo(p string) (Modinfo, error) {
	data, err := ReadModuleFile(p)
	if err != nil {
		return nil, err
	}
	mi, err := modinfoFromELF(data)
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", p, err)
	}
	return mi, nil
}

func modinfoFromELF(data []byte) (Modinfo, error) {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("not an ELF file: %w", err)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, errors.New("no .modinfo section; is it a kernel module?")
	}
	if sec.Type == elf.SHT_NOBITS || sec.Size > uint64(len(data)) {
		return nil, errors.New("bad .modinfo section")
	}
	b, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("reading .modinfo: %w", err)
	}
	return ParseModinfo(b), nil
}

// moduleName normalises a module name or file name to the kernel's form.
func moduleName(s string) string {
	s = path.Base(filepath.ToSlash(s))
	for _, ext := range []string{".ko.xz", ".ko.zst", ".ko.gz", ".ko"} {
		if strings.HasSuffix(s, ext) {
			s = strings.TrimSuffix(s, ext)
			break
		}
	}
	return strings.ReplaceAll(s, "-", "_")
}

func isModuleFile(name string) bool {
	for _, ext := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
		if strings.HasSuffix(name, ext) {
			return true
		}
	}
	return false
}

// splitList splits a depends= value ("a,b,c").
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, moduleName(p))
		}
	}
	return out
}

// parseSoftdep splits softdep= values ("pre: a b post: c") into pre and
// post lists.
func parseSoftdep(values []string) (pre, post []string) {
	for _, v := range values {
		var cur *[]string
		for _, tok := range strings.Fields(v) {
			switch tok {
			case "pre:":
				cur = &pre
			case "post:":
				cur = &post
			default:
				if cur != nil {
					*cur = append(*cur, tok)
				}
			}
		}
	}
	return pre, post
}

// ModuleIndex is what a lib/modules/<release> directory holds: modules
// by name and alias, and the names of built-in modules.
type ModuleIndex struct {
	Dir            string
	byName         map[string]*Module
	byAlias        map[string][]*Module
	builtin        map[string]bool
	builtinAliases map[string]bool
}

// ScanModules reads the .modinfo of every module file under dir (a
// lib/modules/<release> directory), and modules.builtin and
// modules.builtin.modinfo when present.
func ScanModules(dir string) (*ModuleIndex, error) {
	ix := &ModuleIndex{Dir: dir, byName: map[string]*Module{}, byAlias: map[string][]*Module{},
		builtin: map[string]bool{}, builtinAliases: map[string]bool{}}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !isModuleFile(d.Name()) {
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		mi, err := ReadModinfo(p)
		if err != nil {
			return err
		}
		m := &Module{Path: p, Name: moduleName(mi.First("name"))}
		if mi.First("name") == "" {
			m.Name = moduleName(d.Name())
		}
		if prev, ok := ix.byName[m.Name]; ok {
			return fmt.Errorf("module %q is in two files: %s and %s", m.Name, prev.Path, p)
		}
		m.Depends = splitList(mi.First("depends"))
		m.SoftPre, m.SoftPost = parseSoftdep(mi["softdep"])
		m.Aliases = mi["alias"]
		ix.byName[m.Name] = m
		for _, a := range m.Aliases {
			ix.byAlias[a] = append(ix.byAlias[a], m)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scanning modules in %s: %w", dir, err)
	}
	for _, ms := range ix.byAlias {
		sort.Slice(ms, func(i, j int) bool { return ms[i].Name < ms[j].Name })
	}
	if data, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if line = strings.TrimSpace(line); line != "" {
				ix.builtin[moduleName(line)] = true
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if data, err := os.ReadFile(filepath.Join(dir, "modules.builtin.modinfo")); err == nil {
		for _, s := range bytes.Split(data, []byte{0}) {
			k, v, ok := strings.Cut(string(s), "=")
			if !ok {
				continue
			}
			mod, key, ok := strings.Cut(k, ".")
			if !ok {
				continue
			}
			ix.builtin[moduleName(mod)] = true
			if key == "alias" {
				ix.builtinAliases[v] = true
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return ix, nil
}

// Lookup returns the module with the given name.
func (ix *ModuleIndex) Lookup(name string) (*Module, bool) {
	m, ok := ix.byName[moduleName(name)]
	return m, ok
}

// Builtin reports whether name is built into the kernel.
func (ix *ModuleIndex) Builtin(name string) bool { return ix.builtin[moduleName(name)] }

// resolve maps a name or alias to modules to load; ok is false when it is
// neither a module, a built-in, nor an alias of either. Built-ins resolve
// to nothing.
func (ix *ModuleIndex) resolve(name string) ([]*Module, bool) {
	if m, ok := ix.byName[moduleName(name)]; ok {
		return []*Module{m}, true
	}
	if ix.builtin[moduleName(name)] || ix.builtinAliases[name] {
		return nil, true
	}
	if ms := ix.byAlias[name]; len(ms) > 0 {
		return ms, true
	}
	return nil, false
}

// Order returns the modules to load, dependencies first, for the required
// and optional names (module names or aliases). A required name that is
// neither a module nor built in is an error, as is a missing hard
// dependency or a dependency cycle; missing optional names and soft
// dependencies are skipped. The order depends only on the inputs.
func (ix *ModuleIndex) Order(required, optional []string) ([]*Module, error) {
	o := orderer{ix: ix, state: map[*Module]int{}}
	for _, n := range required {
		ms, ok := ix.resolve(n)
		if !ok {
			return nil, fmt.Errorf("module %q not found in %s: no module file has that name or alias, and it is not built in", n, ix.Dir)
		}
		if len(ms) > 0 {
			if err := o.visit(ms[0], false, nil); err != nil {
				return nil, err
			}
		}
	}
	for _, n := range optional {
		if ms, _ := ix.resolve(n); len(ms) > 0 {
			if err := o.visit(ms[0], false, nil); err != nil {
				return nil, err
			}
		}
	}
	return o.out, nil
}

type orderer struct {
	ix    *ModuleIndex
	state map[*Module]int // 1 visiting, 2 done
	out   []*Module
}

func (o *orderer) visit(m *Module, soft bool, chain []string) error {
	switch o.state[m] {
	case 2:
		return nil
	case 1:
		if soft {
			return nil
		}
		return fmt.Errorf("module dependency cycle: %s -> %s", strings.Join(chain, " -> "), m.Name)
	}
	o.state[m] = 1
	chain = append(chain, m.Name)
	for _, s := range m.SoftPre {
		ms, _ := o.ix.resolve(s)
		for _, p := range ms {
			if err := o.visit(p, true, chain); err != nil {
				return err
			}
		}
	}
	for _, d := range m.Depends {
		if o.ix.builtin[d] {
			continue
		}
		dm, ok := o.ix.byName[d]
		if !ok {
			return fmt.Errorf("module %q (needed by %s) not found in %s; the module tree is incomplete", d, strings.Join(chain, " -> "), o.ix.Dir)
		}
		if err := o.visit(dm, false, chain); err != nil {
			return err
		}
	}
	o.state[m] = 2
	o.out = append(o.out, m)
	for _, s := range m.SoftPost {
		ms, _ := o.ix.resolve(s)
		for _, p := range ms {
			if err := o.visit(p, true, chain); err != nil {
				return err
			}
		}
	}
	return nil
}

// ModuleOrder returns the files of the wanted modules and their
// dependencies under modulesDir (a lib/modules/<release> directory), in an
// order that loads every dependency before its users. Built-in modules are
// skipped; a wanted module that is missing is an error naming it.
func ModuleOrder(modulesDir string, wanted []string) ([]string, error) {
	ix, err := ScanModules(modulesDir)
	if err != nil {
		return nil, err
	}
	ms, err := ix.Order(wanted, nil)
	if err != nil {
		return nil, err
	}
	paths := make([]string, len(ms))
	for i, m := range ms {
		paths[i] = m.Path
	}
	return paths, nil
}
