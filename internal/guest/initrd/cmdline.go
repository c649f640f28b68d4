package initrd

import (
	"strconv"
	"strings"
	"time"
)

// Defaults for what the kernel command line leaves out.
const (
	DefaultRoot       = "/dev/vda"
	DefaultRootFSType = "ext4"
	DefaultInit       = "/sbin/init"
	DefaultRootWait   = 10 * time.Second
)

// Config is what the initramfs takes from the kernel command line.
type Config struct {
	Root      string        // root= (a device path)
	FSTypes   []string      // rootfstype=, comma-separated candidates
	RootFlags string        // rootflags=, passed to mount as data
	ReadOnly  bool          // "ro" (the kernel's default) unless "rw"
	Init      string        // init=
	RootWait  time.Duration // how long to wait for the root device; rootdelay= raises it
	Quiet     bool          // "quiet": only warnings and errors
	Test      bool          // banger.initrd_test=1
	// ModuleParams holds "<module>.<param>=<value>" arguments by module
	// name, as "param=value" strings to pass when loading that module
	// (what modprobe would do; virtio_mmio.device= needs it).
	ModuleParams map[string][]string
}

// ParseCmdline parses a kernel command line (the contents of
// /proc/cmdline). Double quotes group words as the kernel does and are
// removed; everything after a lone "--" belongs to init and is ignored.
func ParseCmdline(s string) Config {
	c := Config{Root: DefaultRoot, FSTypes: []string{DefaultRootFSType}, ReadOnly: true,
		Init: DefaultInit, RootWait: DefaultRootWait, ModuleParams: map[string][]string{}}
	for _, arg := range SplitCmdline(s) {
		if arg == "--" {
			break
		}
		key, val, hasVal := strings.Cut(arg, "=")
		switch {
		case key == "root" && hasVal && val != "":
			c.Root = val
		case key == "rootfstype" && hasVal:
			var ts []string
			for _, t := range strings.Split(val, ",") {
				if t = strings.TrimSpace(t); t != "" {
					ts = append(ts, t)
				}
			}
			if len(ts) > 0 {
				c.FSTypes = ts
			}
		case key == "rootflags" && hasVal:
			c.RootFlags = val
		case arg == "ro":
			c.ReadOnly = true
		case arg == "rw":
			c.ReadOnly = false
		case key == "init" && hasVal && strings.HasPrefix(val, "/"):
			c.Init = val
		case key == "rootdelay" && hasVal:
			if n, err := strconv.Atoi(val); err == nil && n > 0 && n <= 3600 {
				if d := time.Duration(n) * time.Second; d > c.RootWait {
					c.RootWait = d
				}
			}
		case arg == "quiet":
			c.Quiet = true
		case key == "banger.initrd_test":
			c.Test = hasVal && (val == "1" || val == "true" || val == "yes")
		case hasVal && strings.Contains(key, "."):
			mod, param, _ := strings.Cut(key, ".")
			if mod == "" || param == "" {
				continue
			}
			mod = strings.ReplaceAll(mod, "-", "_")
			if strings.ContainsAny(val, " \t") {
				val = `"` + val + `"`
			}
			c.ModuleParams[mod] = append(c.ModuleParams[mod], param+"="+val)
		}
	}
	return c
}

// Params returns the parameter string to load module name with.
func (c Config) Params(name string) string {
	return strings.Join(c.ModuleParams[strings.ReplaceAll(name, "-", "_")], " ")
}

// SplitCmdline splits a kernel command line on blanks outside double
// quotes and drops the quotes, as the kernel does. The agent's boot duties
// read /proc/cmdline with it too.
func SplitCmdline(s string) []string {
	var args []string
	var cur strings.Builder
	inQuote, have := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote = !inQuote
			have = true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n' || r == '\r'):
			if have {
				args = append(args, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		args = append(args, cur.String())
	}
	return args
}

// ParseManifest returns the module paths listed in a manifest.
func ParseManifest(data string) []string {
	var paths []string
	for _, line := range strings.Split(data, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		paths = append(paths, line)
	}
	return paths
}
