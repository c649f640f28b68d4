package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	"github.com/BurntSushi/toml"
)

// Config is banger's effective configuration: defaults, overridden by the
// config file. Paths in it are absolute and cleaned, with "~/" expanded.
type Config struct {
	DefaultImageName string
	FirecrackerBin   string // "" = look up "firecracker" on PATH when needed
	JailerBin        string // "" = "jailer" beside FirecrackerBin, else on PATH
	QemuBin          string // "" = look up "qemu-system-x86_64" on PATH when needed
	VMM              string // "auto", "firecracker" or "qemu"
	COW              string // "auto", "dmsnap", "reflink" or "copy"
	SSHKeyPath       string
	StateDir         string
	RuntimeDir       string
	CatalogBaseURL   string // "" = use the URLs in catalog entries as they are
	BridgeName       string
	BridgeSubnet     netip.Prefix
	Network          string // "auto", "bridge" (tap on the bridge; root or the helper) or "user" (QEMU user-mode)
	HostsFile        string // where NAME.banger lines are kept; "" = nowhere
	HelperSocket     string // the privileged helper's socket, used when bangerd is not root
	DefaultVCPUs     int
	DefaultMemory    Size
	DefaultDiskSize  Size
	Warm             int // how many warm snapshots of the default image bangerd keeps for vm run; 0 = none
	LogLevel         string
	OCIMaxEntries    int64  // most tar entries an OCI image may have
	OCIMaxPathBytes  Size   // most bytes the names of an OCI image's entries may have together
	ReleaseURL       string // the release tree `banger update` reads, without a trailing '/'
}

// Options tells Load where to look. The zero value means the real
// environment: no --config flag, os.Getenv and the user's home directory.
type Options struct {
	// Path is the --config flag's value; "" means the flag was not given.
	Path string
	// Getenv reads environment variables; nil means os.Getenv.
	Getenv func(string) string
	// Home is the home directory used for "~/" and the default locations;
	// "" means $HOME (read through Getenv), else os.UserHomeDir().
	Home string
}

// Where the config file path came from, reported in Loaded.PathFrom.
const (
	PathFromFlag    = "flag"            // Options.Path (the --config flag)
	PathFromEnv     = "BANGER_CONFIG"   // the BANGER_CONFIG variable
	PathFromXDG     = "XDG_CONFIG_HOME" // $XDG_CONFIG_HOME/banger/config.toml
	PathFromDefault = "default"         // ~/.config/banger/config.toml
)

// Source kinds.
const (
	SourceDefault = "default" // banger's built-in default
	SourceFile    = "file"    // set in the config file
	SourceEnv     = "env"     // derived from an XDG_* environment variable
)

// Source says where one effective value came from.
type Source struct {
	Kind   string `json:"kind"`             // SourceDefault, SourceFile or SourceEnv
	File   string `json:"file,omitempty"`   // for SourceFile
	Line   int    `json:"line,omitempty"`   // for SourceFile
	Detail string `json:"detail,omitempty"` // the variable for SourceEnv; for a derived default, e.g. "from state_dir"
}

// String renders the source for humans: "default", "/path/config.toml:3",
// "env XDG_STATE_HOME" or "default (from state_dir)".
func (s Source) String() string {
	switch s.Kind {
	case SourceFile:
		if s.Line > 0 {
			return s.File + ":" + strconv.Itoa(s.Line)
		}
		return s.File
	case SourceEnv:
		return "env " + s.Detail
	}
	if s.Detail != "" {
		return s.Kind + " (" + s.Detail + ")"
	}
	return s.Kind
}

// Setting is one key's effective value and where it came from. Value is
// rendered as it would be written in the file, without TOML quotes: "2GiB",
// "10.200.0.0/24", "2", or "" for an unset optional path or URL.
type Setting struct {
	Key    string `json:"key"`
	Value  string `json:"value"`
	Source Source `json:"source"`
}

// Loaded is the result of Load or Default.
type Loaded struct {
	Config Config
	// Path is the config file consulted (or that would be, for Default).
	Path string
	// PathFrom says how Path was chosen: PathFromFlag, PathFromEnv,
	// PathFromXDG or PathFromDefault.
	PathFrom string
	// FileFound reports whether Path existed and was read.
	FileFound bool

	sources map[string]Source
}

// Settings lists every key in the documented order with its effective value
// and source.
func (l *Loaded) Settings() []Setting {
	out := make([]Setting, 0, len(keys))
	for _, k := range keys {
		src, ok := l.sources[k.name]
		if !ok {
			src = Source{Kind: SourceDefault}
		}
		out = append(out, Setting{Key: k.name, Value: k.get(&l.Config), Source: src})
	}
	return out
}

// Error is returned for every problem with a config file. Line is 0 when the
// problem is with the file as a whole (missing, unreadable).
type Error struct {
	File string
	Line int
	Key  string // the key at fault, if any
	Msg  string // what is wrong and what is allowed
	Err  error  // the underlying error, if any (e.g. fs.ErrNotExist)
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("config %s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("config %s: %s", e.File, e.Msg)
}

func (e *Error) Unwrap() error { return e.Err }

// maxFileSize bounds how much of a config file is read; a real one is a few
// hundred bytes, so anything near this was named by mistake.
const maxFileSize = 1 << 20

// Default returns the defaults for this environment without reading any
// file. Path is set to where Load would look.
func Default(opts Options) (*Loaded, error) {
	env := newEnv(opts)
	path, from, err := env.configPath()
	if err != nil {
		return nil, err
	}
	l := &Loaded{Path: path, PathFrom: from, sources: map[string]Source{}}
	if err := applyDefaults(l, env, nil); err != nil {
		return nil, err
	}
	return l, nil
}

// Load finds the config file (the --config flag, then BANGER_CONFIG, then
// $XDG_CONFIG_HOME/banger/config.toml, then ~/.config/banger/config.toml),
// reads and validates it, and fills in defaults. A file missing from the
// default location means all defaults; a missing file that was named
// explicitly is an error. Problems in the file are returned as *Error; when
// there are several, they are joined (errors.Join) in line order.
func Load(opts Options) (*Loaded, error) {
	env := newEnv(opts)
	path, from, err := env.configPath()
	if err != nil {
		return nil, err
	}
	l := &Loaded{Path: path, PathFrom: from, sources: map[string]Source{}}
	data, err := readFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && (from == PathFromXDG || from == PathFromDefault):
		// No file at the default location: all defaults.
	case errors.Is(err, fs.ErrNotExist):
		how := "--config"
		if from == PathFromEnv {
			how = "BANGER_CONFIG"
		}
		return nil, &Error{File: path, Err: err,
			Msg: "no such file (named by " + how + "): create it, correct the path, or drop " + how + " to use the default location"}
	case err != nil:
		return nil, &Error{File: path, Err: err, Msg: err.Error()}
	default:
		l.FileFound = true
	}
	var set map[string]any
	if l.FileFound {
		if set, err = parseFile(l, env, data); err != nil {
			return nil, err
		}
	}
	if err := applyDefaults(l, env, set); err != nil {
		return nil, err
	}
	return l, nil
}

// readFile reads a config file, refusing directories and oversized input.
// Its errors (other than not-exist) are phrased for the user.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		if errors.Is(err, fs.ErrPermission) {
			return nil, fmt.Errorf("cannot read the file: permission denied; make it readable by this user: %w", err)
		}
		return nil, fmt.Errorf("cannot open the file: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		return nil, errors.New("is a directory, not a config file: name the config.toml file itself")
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read the file: %w", err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("is larger than %s, which is not a banger config file: check the path", Size(maxFileSize))
	}
	return data, nil
}

// errLineProbe is returned by lineProbe so that the TOML decoder reports the
// position of the key being decoded.
var errLineProbe = errors.New("line probe")

type lineProbe struct{}

func (lineProbe) UnmarshalTOML(any) error { return errLineProbe }

// syntaxErrorLine returns the line of a TOML syntax error. The decoder
// counts an unexpected newline as part of the next line; counting from the
// byte offset puts the error on the line the newline ends.
func syntaxErrorLine(data []byte, pos toml.Position) int {
	if pos.Start >= 0 && pos.Start < len(data) && pos.Line > 0 {
		return 1 + bytes.Count(data[:pos.Start], []byte("\n"))
	}
	return pos.Line
}

// keyLine returns the line on which the TOML decoder saw the key holding p,
// or 0 if unknown. The decoder reports a key's position in the error of an
// Unmarshaler, so lineProbe asks it. A table made implicitly by dotted keys
// has no position of its own; its first sub-key's line is used.
func keyLine(md *toml.MetaData, p toml.Primitive) int {
	var pe toml.ParseError
	if err := md.PrimitiveDecode(p, lineProbe{}); errors.As(err, &pe) && pe.Position.Line > 0 {
		return pe.Position.Line
	}
	var sub map[string]toml.Primitive
	if err := md.PrimitiveDecode(p, &sub); err != nil {
		return 0
	}
	line := 0
	for _, sp := range sub {
		if l := keyLine(md, sp); l > 0 && (line == 0 || l < line) {
			line = l
		}
	}
	return line
}

// parseFile decodes and validates the file's keys into l.Config, recording
// their sources. It returns the raw values by key.
func parseFile(l *Loaded, env *environ, data []byte) (map[string]any, error) {
	var prims map[string]toml.Primitive
	md, err := toml.Decode(string(data), &prims)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &Error{File: l.Path, Line: syntaxErrorLine(data, pe.Position), Key: pe.LastKey,
				Msg: "invalid TOML: " + pe.Message, Err: err}
		}
		return nil, &Error{File: l.Path, Msg: "invalid TOML: " + err.Error(), Err: err}
	}
	type item struct {
		key  string
		line int
		val  any
	}
	items := make([]item, 0, len(prims))
	for k, p := range prims {
		it := item{key: k}
		it.line = keyLine(&md, p)
		if err := md.PrimitiveDecode(p, &it.val); err != nil {
			return nil, &Error{File: l.Path, Line: it.line, Key: k, Msg: err.Error(), Err: err}
		}
		items = append(items, it)
	}
	sort.Slice(items, func(i, j int) bool {
		if items[i].line != items[j].line {
			return items[i].line < items[j].line
		}
		return items[i].key < items[j].key
	})

	var errs []error
	set := make(map[string]any, len(items))
	for _, it := range items {
		k := keyByName(it.key)
		if k == nil {
			errs = append(errs, &Error{File: l.Path, Line: it.line, Key: it.key, Msg: unknownKeyMsg(it.key)})
			continue
		}
		if reason := k.set(&l.Config, it.val, env); reason != "" {
			errs = append(errs, &Error{File: l.Path, Line: it.line, Key: it.key,
				Msg: fmt.Sprintf("%s = %s is not allowed: %s", it.key, renderValue(it.val), reason)})
			continue
		}
		set[it.key] = it.val
		l.sources[it.key] = Source{Kind: SourceFile, File: l.Path, Line: it.line}
	}
	switch len(errs) {
	case 0:
		return set, nil
	case 1:
		return nil, errs[0]
	}
	return nil, errors.Join(errs...)
}

// applyDefaults fills every key not in set with its default, in dependency
// order: state_dir first, then the keys derived from it.
func applyDefaults(l *Loaded, env *environ, set map[string]any) error {
	c := &l.Config
	isSet := func(k string) bool { _, ok := set[k]; return ok }
	for _, k := range keys {
		if k.def != nil && !isSet(k.name) {
			k.def(c)
		}
	}
	if !isSet("state_dir") {
		if x := env.xdg("XDG_STATE_HOME"); x != "" {
			c.StateDir = filepath.Join(x, "banger")
			l.sources["state_dir"] = Source{Kind: SourceEnv, Detail: "XDG_STATE_HOME"}
		} else {
			home, err := env.home()
			if err != nil {
				return fmt.Errorf("config: cannot choose the default state_dir: %w; set HOME, XDG_STATE_HOME or state_dir in %s", err, l.Path)
			}
			c.StateDir = filepath.Join(home, ".local", "state", "banger")
		}
	}
	if !isSet("ssh_key_path") {
		c.SSHKeyPath = filepath.Join(c.StateDir, "ssh", "id_ed25519")
		l.sources["ssh_key_path"] = Source{Kind: SourceDefault, Detail: "from state_dir"}
	}
	if !isSet("runtime_dir") {
		if x := env.xdg("XDG_RUNTIME_DIR"); x != "" {
			c.RuntimeDir = filepath.Join(x, "banger")
			l.sources["runtime_dir"] = Source{Kind: SourceEnv, Detail: "XDG_RUNTIME_DIR"}
		} else {
			c.RuntimeDir = filepath.Join(c.StateDir, "run")
			l.sources["runtime_dir"] = Source{Kind: SourceDefault, Detail: "from state_dir"}
		}
	}
	return nil
}
