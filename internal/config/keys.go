package config

import (
	"fmt"
	"net/netip"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// keySpec describes one config key: its default, how a file value is
// validated and stored, and how the effective value is rendered.
type keySpec struct {
	name string
	// def stores the default; nil for keys whose default depends on the
	// environment or on other keys (see applyDefaults).
	def func(c *Config)
	// set validates a decoded TOML value and stores it, or returns the
	// reason it is not allowed (phrased to follow "is not allowed: ").
	set func(c *Config, v any, env *environ) string
	get func(c *Config) string
}

// Limits enforced on the numeric keys.
const (
	MinVCPUs       = 1
	MaxVCPUs       = 64
	MinMemory      = 128 << 20 // 128MiB
	MinDiskSize    = 512 << 20 // 512MiB
	MaxWarm        = 4         // most warm snapshots the warm pool keeps
	MinSubnetBits  = 16
	MaxSubnetBits  = 29
	maxIfNameBytes = 15

	// Bounds of the OCI import limits: below the minimums no real image
	// fits; above the maximums the limit no longer protects memory.
	MinOCIMaxEntries   = 1000
	MaxOCIMaxEntries   = 100_000_000
	MinOCIMaxPathBytes = 1 << 20 // 1MiB
)

var (
	vmmValues      = []string{"auto", "firecracker", "qemu"}
	networkValues  = []string{"auto", "bridge", "user"}
	cowValues      = []string{"auto", "dmsnap", "reflink", "copy"}
	logLevelValues = []string{"debug", "info", "warn", "error"}
)

// keys lists every key in the documented order.
var keys = []keySpec{
	{
		name: "default_image_name",
		def:  func(c *Config) { c.DefaultImageName = "debian-bookworm" },
		set: func(c *Config, v any, _ *environ) string {
			s, ok := v.(string)
			if !ok || !isDNSLabel(s) {
				return "use an image name made of 1 to 63 lowercase letters, digits and '-', not starting or ending with '-'"
			}
			c.DefaultImageName = s
			return ""
		},
		get: func(c *Config) string { return c.DefaultImageName },
	},
	{
		name: "firecracker_bin",
		def:  func(c *Config) { c.FirecrackerBin = "" },
		set:  pathSetter(func(c *Config) *string { return &c.FirecrackerBin }, true),
		get:  func(c *Config) string { return c.FirecrackerBin },
	},
	{
		name: "jailer_bin",
		def:  func(c *Config) { c.JailerBin = "" },
		set:  pathSetter(func(c *Config) *string { return &c.JailerBin }, true),
		get:  func(c *Config) string { return c.JailerBin },
	},
	{
		name: "qemu_bin",
		def:  func(c *Config) { c.QemuBin = "" },
		set:  pathSetter(func(c *Config) *string { return &c.QemuBin }, true),
		get:  func(c *Config) string { return c.QemuBin },
	},
	{
		name: "vmm",
		def:  func(c *Config) { c.VMM = "auto" },
		set:  oneOfSetter(func(c *Config) *string { return &c.VMM }, vmmValues),
		get:  func(c *Config) string { return c.VMM },
	},
	{
		name: "cow",
		def:  func(c *Config) { c.COW = "auto" },
		set:  oneOfSetter(func(c *Config) *string { return &c.COW }, cowValues),
		get:  func(c *Config) string { return c.COW },
	},
	{
		name: "ssh_key_path",
		set:  pathSetter(func(c *Config) *string { return &c.SSHKeyPath }, false),
		get:  func(c *Config) string { return c.SSHKeyPath },
	},
	{
		name: "state_dir",
		set:  pathSetter(func(c *Config) *string { return &c.StateDir }, false),
		get:  func(c *Config) string { return c.StateDir },
	},
	{
		name: "runtime_dir",
		set:  pathSetter(func(c *Config) *string { return &c.RuntimeDir }, false),
		get:  func(c *Config) string { return c.RuntimeDir },
	},
	{
		name: "catalog_base_url",
		def:  func(c *Config) { c.CatalogBaseURL = "" },
		set: func(c *Config, v any, _ *environ) string {
			s, ok := v.(string)
			if !ok {
				return catalogURLHint
			}
			if reason := checkCatalogURL(s); reason != "" {
				return reason
			}
			c.CatalogBaseURL = s
			return ""
		},
		get: func(c *Config) string { return c.CatalogBaseURL },
	},
	{
		name: "bridge_name",
		def:  func(c *Config) { c.BridgeName = "banger0" },
		set: func(c *Config, v any, _ *environ) string {
			s, ok := v.(string)
			if !ok || !isIfName(s) {
				return "use a Linux interface name: 1 to 15 characters, none of them '/', ':' or whitespace"
			}
			c.BridgeName = s
			return ""
		},
		get: func(c *Config) string { return c.BridgeName },
	},
	{
		name: "bridge_subnet",
		def:  func(c *Config) { c.BridgeSubnet = netip.MustParsePrefix("10.200.0.0/24") },
		set: func(c *Config, v any, _ *environ) string {
			s, _ := v.(string)
			p, reason := checkSubnet(s)
			if reason != "" {
				return reason
			}
			c.BridgeSubnet = p
			return ""
		},
		get: func(c *Config) string { return c.BridgeSubnet.String() },
	},
	{
		name: "network",
		def:  func(c *Config) { c.Network = "auto" },
		set:  oneOfSetter(func(c *Config) *string { return &c.Network }, networkValues),
		get:  func(c *Config) string { return c.Network },
	},
	{
		name: "hosts_file",
		def:  func(c *Config) { c.HostsFile = "/etc/hosts" },
		set:  pathSetter(func(c *Config) *string { return &c.HostsFile }, true),
		get:  func(c *Config) string { return c.HostsFile },
	},
	{
		name: "helper_socket",
		def:  func(c *Config) { c.HelperSocket = "/run/banger/helper.sock" },
		set:  pathSetter(func(c *Config) *string { return &c.HelperSocket }, false),
		get:  func(c *Config) string { return c.HelperSocket },
	},
	{
		name: "default_vcpus",
		def:  func(c *Config) { c.DefaultVCPUs = 2 },
		set: func(c *Config, v any, _ *environ) string {
			n, ok := v.(int64)
			if !ok || n < MinVCPUs || n > MaxVCPUs {
				return fmt.Sprintf("use a whole number from %d to %d, without quotes", MinVCPUs, MaxVCPUs)
			}
			c.DefaultVCPUs = int(n)
			return ""
		},
		get: func(c *Config) string { return strconv.Itoa(c.DefaultVCPUs) },
	},
	{
		name: "default_memory",
		def:  func(c *Config) { c.DefaultMemory = 1 << 30 },
		set:  sizeSetter(func(c *Config) *Size { return &c.DefaultMemory }, MinMemory),
		get:  func(c *Config) string { return c.DefaultMemory.String() },
	},
	{
		name: "default_disk_size",
		def:  func(c *Config) { c.DefaultDiskSize = 8 << 30 },
		set:  sizeSetter(func(c *Config) *Size { return &c.DefaultDiskSize }, MinDiskSize),
		get:  func(c *Config) string { return c.DefaultDiskSize.String() },
	},
	{
		name: "warm",
		def:  func(c *Config) { c.Warm = 1 },
		set: func(c *Config, v any, _ *environ) string {
			n, ok := v.(int64)
			if !ok || n < 0 || n > MaxWarm {
				return fmt.Sprintf("use a whole number from 0 to %d, without quotes (0 turns the warm pool off)", MaxWarm)
			}
			c.Warm = int(n)
			return ""
		},
		get: func(c *Config) string { return strconv.Itoa(c.Warm) },
	},
	{
		name: "log_level",
		def:  func(c *Config) { c.LogLevel = "info" },
		set:  oneOfSetter(func(c *Config) *string { return &c.LogLevel }, logLevelValues),
		get:  func(c *Config) string { return c.LogLevel },
	},
	{
		name: "oci_max_entries",
		def:  func(c *Config) { c.OCIMaxEntries = 500_000 },
		set: func(c *Config, v any, _ *environ) string {
			n, ok := v.(int64)
			if !ok || n < MinOCIMaxEntries || n > MaxOCIMaxEntries {
				return fmt.Sprintf("use a whole number from %d to %d, without quotes", MinOCIMaxEntries, MaxOCIMaxEntries)
			}
			c.OCIMaxEntries = n
			return ""
		},
		get: func(c *Config) string { return strconv.FormatInt(c.OCIMaxEntries, 10) },
	},
	{
		name: "oci_max_path_bytes",
		def:  func(c *Config) { c.OCIMaxPathBytes = 64 << 20 },
		set:  sizeSetter(func(c *Config) *Size { return &c.OCIMaxPathBytes }, MinOCIMaxPathBytes),
		get:  func(c *Config) string { return c.OCIMaxPathBytes.String() },
	},
	{
		name: "release_url",
		def:  func(c *Config) { c.ReleaseURL = DefaultReleaseURL },
		set: func(c *Config, v any, _ *environ) string {
			s, ok := v.(string)
			switch {
			case !ok:
				return releaseURLHint
			case s == "":
				return "it is empty: " + releaseURLHint
			}
			if reason := checkBaseURL(s, releaseURLHint, "file:///srv/banger-releases"); reason != "" {
				return reason
			}
			c.ReleaseURL = strings.TrimRight(s, "/")
			return ""
		},
		get: func(c *Config) string { return c.ReleaseURL },
	},
}

// Keys returns the name of every config key, in the documented order.
func Keys() []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.name
	}
	return out
}

func keyByName(name string) *keySpec {
	for i := range keys {
		if keys[i].name == name {
			return &keys[i]
		}
	}
	return nil
}

// unknownKeyMsg names the unknown key, suggests a close known one, and
// lists them all.
func unknownKeyMsg(name string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "unknown key %q", name)
	if s := closestKey(name); s != "" {
		fmt.Fprintf(&b, ": did you mean %s? Allowed keys are ", s)
	} else {
		b.WriteString(": allowed keys are ")
	}
	b.WriteString(strings.Join(Keys(), ", ") + " (all top-level, no [tables])")
	return b.String()
}

// closestKey returns the known key nearest to name, if it is close enough to
// be a likely typo.
func closestKey(name string) string {
	norm := strings.ToLower(strings.ReplaceAll(name, "-", "_"))
	// Allow about one edit per three characters, at least one, at most two.
	limit := min(max(len(norm)/3, 1), 2)
	best, bestD := "", limit+1
	for _, k := range keys {
		if k.name == norm {
			return k.name
		}
		if d := editDistance(norm, k.name); d < bestD {
			best, bestD = k.name, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func oneOfSetter(field func(*Config) *string, allowed []string) func(*Config, any, *environ) string {
	return func(c *Config, v any, _ *environ) string {
		s, _ := v.(string)
		for _, a := range allowed {
			if s == a {
				*field(c) = s
				return ""
			}
		}
		return "use " + orList(allowed)
	}
}

// orList renders ["a","b","c"] as "a, b or c".
func orList(xs []string) string {
	if len(xs) == 1 {
		return xs[0]
	}
	return strings.Join(xs[:len(xs)-1], ", ") + " or " + xs[len(xs)-1]
}

// pathSetter accepts an absolute path or one starting with "~/"; optional
// paths may also be "" (meaning: the default).
func pathSetter(field func(*Config) *string, optional bool) func(*Config, any, *environ) string {
	return func(c *Config, v any, env *environ) string {
		hint := "use an absolute path, or one starting with ~/, in quotes"
		s, ok := v.(string)
		switch {
		case !ok:
			return hint
		case s == "" && optional:
			*field(c) = ""
			return ""
		case s == "":
			return "it is empty: " + hint + ", or remove the line to use the default"
		case strings.ContainsRune(s, 0):
			return "it contains a NUL character: " + hint
		}
		p, err := env.expand(s)
		if err != nil {
			return err.Error()
		}
		if !filepath.IsAbs(p) {
			return "it is a relative path: " + hint
		}
		*field(c) = filepath.Clean(p)
		return ""
	}
}

// sizeSetter accepts a size string ("2GiB") or a TOML integer of bytes, at
// least minimum.
func sizeSetter(field func(*Config) *Size, minimum Size) func(*Config, any, *environ) string {
	return func(c *Config, v any, _ *environ) string {
		var sz Size
		switch x := v.(type) {
		case string:
			var reason string
			if sz, reason = parseSize(x); reason != "" {
				return reason
			}
		case int64:
			if x <= 0 {
				return "sizes must be greater than zero: write e.g. \"2GiB\""
			}
			sz = Size(x)
		case float64:
			return "it is fractional: write a whole number of a smaller unit in quotes, e.g. \"1536MiB\""
		default:
			return "use a size in quotes, e.g. \"2GiB\" or \"512MiB\", or a whole number of bytes"
		}
		if sz < minimum {
			return "it is " + sz.String() + ", below the minimum: use at least " + minimum.String()
		}
		*field(c) = sz
		return ""
	}
}

// isDNSLabel reports whether s is 1..63 lowercase letters, digits and '-',
// not starting or ending with '-'.
func isDNSLabel(s string) bool {
	if len(s) < 1 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// isIfName reports whether the kernel would accept s as a network interface
// name: 1..15 bytes, not "." or "..", no '/', ':', whitespace or control
// characters.
func isIfName(s string) bool {
	if len(s) < 1 || len(s) > maxIfNameBytes || s == "." || s == ".." {
		return false
	}
	for _, r := range s {
		if r == '/' || r == ':' || unicode.IsSpace(r) || unicode.IsControl(r) || r == unicode.ReplacementChar {
			return false
		}
	}
	return true
}

const catalogURLHint = `use an http://, https:// or file:// URL, or "" to use the URLs written in the catalog`

// DefaultReleaseURL is the release tree `banger update` reads by default.
const DefaultReleaseURL = "https://releases.banger.dev"

const releaseURLHint = `use the http://, https:// or file:// URL of a banger release tree (the directory holding "latest"), or remove the line for ` + DefaultReleaseURL

// checkCatalogURL returns why s is not an acceptable catalog base URL, or "".
func checkCatalogURL(s string) string {
	if s == "" {
		return ""
	}
	return checkBaseURL(s, catalogURLHint, "file:///srv/banger-catalog")
}

// checkBaseURL returns why s is not an http, https or file URL of a tree, or
// "": hint says what to write instead, example is a good file URL.
func checkBaseURL(s, hint, example string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "it does not parse as a URL (" + strings.TrimPrefix(err.Error(), "parse "+strconv.Quote(s)+": ") + "): " + hint
	}
	switch strings.ToLower(u.Scheme) {
	case "http", "https":
		if u.Host == "" {
			return "it has no host: " + hint
		}
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return "a file URL needs an absolute path and no host, e.g. " + example
		}
		if !strings.HasPrefix(u.Path, "/") {
			return "a file URL needs an absolute path, e.g. " + example
		}
	case "":
		return "it has no scheme: " + hint
	default:
		return "scheme " + u.Scheme + " is not supported: " + hint
	}
	return ""
}

// checkSubnet parses an IPv4 network in CIDR form with a prefix length
// between MinSubnetBits and MaxSubnetBits, written as its network address.
func checkSubnet(s string) (netip.Prefix, string) {
	hint := fmt.Sprintf("use an IPv4 network in CIDR form with a prefix length from /%d to /%d, e.g. 10.200.0.0/24", MinSubnetBits, MaxSubnetBits)
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, hint
	}
	if !p.Addr().Is4() {
		return netip.Prefix{}, "it is not IPv4: " + hint
	}
	if p.Bits() < MinSubnetBits || p.Bits() > MaxSubnetBits {
		return netip.Prefix{}, fmt.Sprintf("a /%d network is out of range: %s", p.Bits(), hint)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Sprintf("it is not a network address (host bits are set): write %s", m)
	}
	return p, ""
}

// renderValue writes a decoded TOML value back in TOML-like form for error
// messages.
func renderValue(v any) string {
	switch x := v.(type) {
	case string:
		return strconv.Quote(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	case time.Time:
		return x.Format(time.RFC3339Nano)
	case []any, []map[string]any:
		return "[...]"
	case map[string]any:
		return "{...}"
	}
	return fmt.Sprint(v)
}
