package config_test

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"banger/internal/config"
)

// fakeEnv returns a Getenv that sees only vars.
func fakeEnv(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

// writeFile writes content to dir/name (creating dir) and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// loadFile loads content written to a temporary file named by --config, with
// an empty environment and a temporary home.
func loadFile(t *testing.T, content string) (*config.Loaded, string, error) {
	t.Helper()
	home := t.TempDir()
	p := writeFile(t, t.TempDir(), "config.toml", content)
	l, err := config.Load(config.Options{Path: p, Home: home, Getenv: fakeEnv(nil)})
	return l, p, err
}

// configError extracts the first *config.Error from err.
func configError(t *testing.T, err error) *config.Error {
	t.Helper()
	if err == nil {
		t.Fatal("got no error, want a *config.Error")
	}
	var ce *config.Error
	if !errors.As(err, &ce) {
		t.Fatalf("error %q (%T) is not a *config.Error", err, err)
	}
	return ce
}

func settingsByKey(l *config.Loaded) map[string]config.Setting {
	m := map[string]config.Setting{}
	for _, s := range l.Settings() {
		m[s.Key] = s
	}
	return m
}

func TestDefaultsWithoutXDG(t *testing.T) {
	home := t.TempDir()
	opts := config.Options{Home: home, Getenv: fakeEnv(nil)}
	for name, fn := range map[string]func(config.Options) (*config.Loaded, error){
		"Load": config.Load, "Default": config.Default,
	} {
		l, err := fn(opts)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		state := filepath.Join(home, ".local/state/banger")
		want := config.Config{
			DefaultImageName: "debian-bookworm",
			VMM:              "auto",
			COW:              "auto",
			SSHKeyPath:       filepath.Join(state, "ssh/id_ed25519"),
			StateDir:         state,
			RuntimeDir:       filepath.Join(state, "run"),
			BridgeName:       "banger0",
			BridgeSubnet:     netip.MustParsePrefix("10.200.0.0/24"),
			Network:          "auto",
			HostsFile:        "/etc/hosts",
			HelperSocket:     "/run/banger/helper.sock",
			DefaultVCPUs:     2,
			DefaultMemory:    1 << 30,
			DefaultDiskSize:  8 << 30,
			Warm:             1,
			LogLevel:         "info",
			OCIMaxEntries:    500_000,
			OCIMaxPathBytes:  64 << 20,
			ReleaseURL:       "https://releases.banger.dev",
		}
		if l.Config != want {
			t.Errorf("%s: config =\n%+v\nwant\n%+v", name, l.Config, want)
		}
		if wantPath := filepath.Join(home, ".config/banger/config.toml"); l.Path != wantPath || l.PathFrom != config.PathFromDefault {
			t.Errorf("%s: path = %q from %q, want %q from default", name, l.Path, l.PathFrom, wantPath)
		}
		if l.FileFound {
			t.Errorf("%s: FileFound = true with no file", name)
		}
		got := map[string]string{}
		for _, s := range l.Settings() {
			got[s.Key] = s.Value + " | " + s.Source.String()
		}
		wantSettings := map[string]string{
			"default_image_name": "debian-bookworm | default",
			"firecracker_bin":    " | default",
			"jailer_bin":         " | default",
			"qemu_bin":           " | default",
			"vmm":                "auto | default",
			"cow":                "auto | default",
			"ssh_key_path":       state + "/ssh/id_ed25519 | default (from state_dir)",
			"state_dir":          state + " | default",
			"runtime_dir":        state + "/run | default (from state_dir)",
			"catalog_base_url":   " | default",
			"bridge_name":        "banger0 | default",
			"bridge_subnet":      "10.200.0.0/24 | default",
			"network":            "auto | default",
			"hosts_file":         "/etc/hosts | default",
			"helper_socket":      "/run/banger/helper.sock | default",
			"default_vcpus":      "2 | default",
			"default_memory":     "1GiB | default",
			"default_disk_size":  "8GiB | default",
			"warm":               "1 | default",
			"log_level":          "info | default",
			"oci_max_entries":    "500000 | default",
			"oci_max_path_bytes": "64MiB | default",
			"release_url":        "https://releases.banger.dev | default",
		}
		if !reflect.DeepEqual(got, wantSettings) {
			t.Errorf("%s: settings =\n%v\nwant\n%v", name, got, wantSettings)
		}
	}
}

func TestDefaultsWithXDG(t *testing.T) {
	home := t.TempDir()
	xdg := t.TempDir()
	env := fakeEnv(map[string]string{
		"XDG_CONFIG_HOME": xdg + "/config",
		"XDG_STATE_HOME":  xdg + "/state/",
		"XDG_RUNTIME_DIR": "/run/user/1000",
	})
	l, err := config.Load(config.Options{Home: home, Getenv: env})
	if err != nil {
		t.Fatal(err)
	}
	if want := xdg + "/config/banger/config.toml"; l.Path != want || l.PathFrom != config.PathFromXDG {
		t.Errorf("path = %q from %q, want %q from XDG_CONFIG_HOME", l.Path, l.PathFrom, want)
	}
	c := l.Config
	if c.StateDir != xdg+"/state/banger" {
		t.Errorf("state_dir = %q", c.StateDir)
	}
	if c.SSHKeyPath != xdg+"/state/banger/ssh/id_ed25519" {
		t.Errorf("ssh_key_path = %q", c.SSHKeyPath)
	}
	if c.RuntimeDir != "/run/user/1000/banger" {
		t.Errorf("runtime_dir = %q", c.RuntimeDir)
	}
	s := settingsByKey(l)
	for key, want := range map[string]string{
		"state_dir":    "env XDG_STATE_HOME",
		"runtime_dir":  "env XDG_RUNTIME_DIR",
		"ssh_key_path": "default (from state_dir)",
	} {
		if got := s[key].Source.String(); got != want {
			t.Errorf("%s source = %q, want %q", key, got, want)
		}
	}
}

func TestRelativeXDGIgnored(t *testing.T) {
	home := t.TempDir()
	env := fakeEnv(map[string]string{"XDG_CONFIG_HOME": "rel/config", "XDG_STATE_HOME": "rel/state", "XDG_RUNTIME_DIR": "rel/run"})
	l, err := config.Load(config.Options{Home: home, Getenv: env})
	if err != nil {
		t.Fatal(err)
	}
	if l.PathFrom != config.PathFromDefault || l.Config.StateDir != home+"/.local/state/banger" || l.Config.RuntimeDir != home+"/.local/state/banger/run" {
		t.Errorf("relative XDG values were used: path %q (%s), state %q, runtime %q", l.Path, l.PathFrom, l.Config.StateDir, l.Config.RuntimeDir)
	}
}

func TestHomeFromEnv(t *testing.T) {
	home := t.TempDir()
	l, err := config.Default(config.Options{Getenv: fakeEnv(map[string]string{"HOME": home})})
	if err != nil {
		t.Fatal(err)
	}
	if l.Config.StateDir != home+"/.local/state/banger" {
		t.Errorf("state_dir = %q, want it under HOME %q", l.Config.StateDir, home)
	}
}

func TestFilePrecedence(t *testing.T) {
	home := t.TempDir()
	xdg := t.TempDir()
	homeFile := writeFile(t, home+"/.config/banger", "config.toml", `vmm = "qemu"`)
	xdgFile := writeFile(t, xdg+"/banger", "config.toml", `vmm = "firecracker"`)
	envFile := writeFile(t, t.TempDir(), "env.toml", `cow = "copy"`)
	flagFile := writeFile(t, t.TempDir(), "flag.toml", `cow = "reflink"`)

	cases := []struct {
		name     string
		flag     string
		env      map[string]string
		wantPath string
		wantFrom string
	}{
		{"home", "", nil, homeFile, config.PathFromDefault},
		{"xdg", "", map[string]string{"XDG_CONFIG_HOME": xdg}, xdgFile, config.PathFromXDG},
		{"env", "", map[string]string{"XDG_CONFIG_HOME": xdg, "BANGER_CONFIG": envFile}, envFile, config.PathFromEnv},
		{"flag", flagFile, map[string]string{"XDG_CONFIG_HOME": xdg, "BANGER_CONFIG": envFile}, flagFile, config.PathFromFlag},
	}
	for _, tc := range cases {
		l, err := config.Load(config.Options{Path: tc.flag, Home: home, Getenv: fakeEnv(tc.env)})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if l.Path != tc.wantPath || l.PathFrom != tc.wantFrom || !l.FileFound {
			t.Errorf("%s: path %q from %q (found %v), want %q from %q", tc.name, l.Path, l.PathFrom, l.FileFound, tc.wantPath, tc.wantFrom)
		}
	}
	// The chosen file's values are the ones applied.
	l, err := config.Load(config.Options{Home: home, Getenv: fakeEnv(map[string]string{"XDG_CONFIG_HOME": xdg})})
	if err != nil {
		t.Fatal(err)
	}
	if l.Config.VMM != "firecracker" {
		t.Errorf("vmm = %q, want the XDG file's firecracker", l.Config.VMM)
	}
	if src := settingsByKey(l)["vmm"].Source; src.Kind != config.SourceFile || src.File != xdgFile || src.Line != 1 {
		t.Errorf("vmm source = %+v, want %s line 1", src, xdgFile)
	}
}

func TestExplicitPathTildeAndRelative(t *testing.T) {
	home := t.TempDir()
	want := writeFile(t, home+"/cfg", "b.toml", `log_level = "debug"`)
	l, err := config.Load(config.Options{Home: home, Getenv: fakeEnv(map[string]string{"BANGER_CONFIG": "~/cfg/b.toml"})})
	if err != nil {
		t.Fatal(err)
	}
	if l.Path != want || l.Config.LogLevel != "debug" {
		t.Errorf("BANGER_CONFIG=~/cfg/b.toml: path %q, log_level %q", l.Path, l.Config.LogLevel)
	}
	t.Chdir(home)
	l, err = config.Load(config.Options{Path: "cfg/b.toml", Home: home, Getenv: fakeEnv(nil)})
	if err != nil {
		t.Fatal(err)
	}
	if l.Path != want {
		t.Errorf("relative --config resolved to %q, want %q", l.Path, want)
	}
}

func TestMissingDefaultFileMeansDefaults(t *testing.T) {
	home := t.TempDir()
	l, err := config.Load(config.Options{Home: home, Getenv: fakeEnv(map[string]string{"XDG_CONFIG_HOME": home + "/nothing-here"})})
	if err != nil {
		t.Fatalf("missing default file: %v", err)
	}
	if l.FileFound || l.Config.VMM != "auto" {
		t.Errorf("FileFound = %v, vmm = %q; want defaults", l.FileFound, l.Config.VMM)
	}
}

func TestMissingExplicitFileIsError(t *testing.T) {
	home := t.TempDir()
	missing := filepath.Join(home, "nope.toml")
	cases := []struct {
		opts config.Options
		how  string
	}{
		{config.Options{Path: missing, Home: home, Getenv: fakeEnv(nil)}, "--config"},
		{config.Options{Home: home, Getenv: fakeEnv(map[string]string{"BANGER_CONFIG": missing})}, "BANGER_CONFIG"},
	}
	for _, tc := range cases {
		l, err := config.Load(tc.opts)
		if l != nil {
			t.Errorf("%s: got a result with a missing file", tc.how)
		}
		ce := configError(t, err)
		if ce.File != missing || !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: error %+v, want file %q and fs.ErrNotExist", tc.how, ce, missing)
		}
		if !strings.Contains(err.Error(), tc.how) || !strings.HasPrefix(err.Error(), "config "+missing+": ") {
			t.Errorf("%s: error %q should start with the file and say it was named by %s", tc.how, err, tc.how)
		}
	}
}

func TestDirectoryAsConfig(t *testing.T) {
	dir := t.TempDir()
	_, err := config.Load(config.Options{Path: dir, Home: dir, Getenv: fakeEnv(nil)})
	ce := configError(t, err)
	if ce.File != dir || !strings.Contains(ce.Msg, "directory") {
		t.Errorf("error = %v, want it to say %s is a directory", err, dir)
	}
}

func TestDefaultDoesNotReadFile(t *testing.T) {
	home := t.TempDir()
	p := writeFile(t, t.TempDir(), "bad.toml", "this is not toml")
	l, err := config.Default(config.Options{Path: p, Home: home, Getenv: fakeEnv(nil)})
	if err != nil {
		t.Fatalf("Default read the file: %v", err)
	}
	if l.Path != p || l.FileFound {
		t.Errorf("Default: path %q found %v, want %q not found", l.Path, l.FileFound, p)
	}
}

const fullFile = `# every key, overridden
default_image_name = "alpine-3"
firecracker_bin = "/opt/fc/firecracker"
qemu_bin = "~/bin/qemu-system-x86_64"
vmm = "qemu"
cow = "reflink"

ssh_key_path = "/keys/banger_ed25519"
state_dir = "/srv/banger/state/"
runtime_dir = "/run/banger-test"
catalog_base_url = "https://mirror.example.test/banger"
bridge_name = "bgr1"
bridge_subnet = "172.30.8.0/22"
default_vcpus = 64
default_memory = "1536MiB"
default_disk_size = 21474836480   # bytes
log_level = "debug"
network = "user"
hosts_file = ""
helper_socket = "/run/banger-test/helper.sock"
oci_max_entries = 2000000
oci_max_path_bytes = "256MiB"
jailer_bin = "/opt/fc/jailer"
release_url = "file:///srv/banger-releases/"
warm = 0
`

func TestFileOverridesEveryKey(t *testing.T) {
	home := t.TempDir()
	p := writeFile(t, t.TempDir(), "config.toml", fullFile)
	l, err := config.Load(config.Options{Path: p, Home: home, Getenv: fakeEnv(map[string]string{
		"XDG_STATE_HOME": "/xdg/state", "XDG_RUNTIME_DIR": "/xdg/run",
	})})
	if err != nil {
		t.Fatal(err)
	}
	want := config.Config{
		DefaultImageName: "alpine-3",
		FirecrackerBin:   "/opt/fc/firecracker",
		JailerBin:        "/opt/fc/jailer",
		QemuBin:          home + "/bin/qemu-system-x86_64",
		VMM:              "qemu",
		COW:              "reflink",
		SSHKeyPath:       "/keys/banger_ed25519",
		StateDir:         "/srv/banger/state",
		RuntimeDir:       "/run/banger-test",
		CatalogBaseURL:   "https://mirror.example.test/banger",
		BridgeName:       "bgr1",
		BridgeSubnet:     netip.MustParsePrefix("172.30.8.0/22"),
		Network:          "user",
		HostsFile:        "",
		HelperSocket:     "/run/banger-test/helper.sock",
		DefaultVCPUs:     64,
		DefaultMemory:    1536 << 20,
		DefaultDiskSize:  20 << 30,
		Warm:             0,
		LogLevel:         "debug",
		OCIMaxEntries:    2_000_000,
		OCIMaxPathBytes:  256 << 20,
		ReleaseURL:       "file:///srv/banger-releases",
	}
	if l.Config != want {
		t.Errorf("config =\n%+v\nwant\n%+v", l.Config, want)
	}
	if !l.FileFound || l.Path != p {
		t.Errorf("FileFound %v path %q", l.FileFound, l.Path)
	}
	settings := l.Settings()
	var order []string
	for _, s := range settings {
		order = append(order, s.Key)
	}
	if !reflect.DeepEqual(order, config.Keys()) || len(order) != 23 {
		t.Errorf("settings order %v, want %v", order, config.Keys())
	}
	wantLines := map[string]int{
		"default_image_name": 2, "firecracker_bin": 3, "qemu_bin": 4, "vmm": 5, "cow": 6,
		"ssh_key_path": 8, "state_dir": 9, "runtime_dir": 10, "catalog_base_url": 11,
		"bridge_name": 12, "bridge_subnet": 13, "default_vcpus": 14, "default_memory": 15,
		"default_disk_size": 16, "log_level": 17, "network": 18, "hosts_file": 19, "helper_socket": 20,
		"oci_max_entries": 21, "oci_max_path_bytes": 22, "jailer_bin": 23, "release_url": 24, "warm": 25,
	}
	for _, s := range settings {
		if s.Source.Kind != config.SourceFile || s.Source.File != p || s.Source.Line != wantLines[s.Key] {
			t.Errorf("%s source = %+v, want %s:%d", s.Key, s.Source, p, wantLines[s.Key])
		}
	}
	byKey := settingsByKey(l)
	for key, want := range map[string]string{
		"default_disk_size": "20GiB", "default_memory": "1536MiB", "default_vcpus": "64",
		"bridge_subnet": "172.30.8.0/22", "state_dir": "/srv/banger/state",
	} {
		if got := byKey[key].Value; got != want {
			t.Errorf("%s value = %q, want %q", key, got, want)
		}
	}
}

func TestTildeExpansion(t *testing.T) {
	l, _, err := loadFile(t, "state_dir = \"~/vms\"\nssh_key_path = \"~/.ssh/id_banger\"\nfirecracker_bin = \"~\"\n")
	if err != nil {
		t.Fatal(err)
	}
	home := strings.TrimSuffix(l.Config.StateDir, "/vms")
	if !filepath.IsAbs(home) || strings.Contains(home, "~") {
		t.Fatalf("state_dir = %q, want ~ expanded to an absolute home", l.Config.StateDir)
	}
	if l.Config.SSHKeyPath != home+"/.ssh/id_banger" || l.Config.FirecrackerBin != home {
		t.Errorf("ssh_key_path = %q, firecracker_bin = %q; want them under %q", l.Config.SSHKeyPath, l.Config.FirecrackerBin, home)
	}
}

func TestDerivedDefaultsFollowStateDir(t *testing.T) {
	home := t.TempDir()
	p := writeFile(t, t.TempDir(), "c.toml", "state_dir = \"/data/banger\"\n")

	l, err := config.Load(config.Options{Path: p, Home: home, Getenv: fakeEnv(map[string]string{"XDG_STATE_HOME": "/xdg/state"})})
	if err != nil {
		t.Fatal(err)
	}
	if l.Config.SSHKeyPath != "/data/banger/ssh/id_ed25519" || l.Config.RuntimeDir != "/data/banger/run" {
		t.Errorf("ssh_key_path %q, runtime_dir %q; want them under state_dir /data/banger", l.Config.SSHKeyPath, l.Config.RuntimeDir)
	}
	s := settingsByKey(l)
	if s["state_dir"].Source.String() != p+":1" || s["runtime_dir"].Source.String() != "default (from state_dir)" {
		t.Errorf("sources: state_dir %q, runtime_dir %q", s["state_dir"].Source, s["runtime_dir"].Source)
	}

	// XDG_RUNTIME_DIR wins over the state_dir-derived runtime dir; the key
	// still follows state_dir.
	l, err = config.Load(config.Options{Path: p, Home: home, Getenv: fakeEnv(map[string]string{"XDG_RUNTIME_DIR": "/run/user/7"})})
	if err != nil {
		t.Fatal(err)
	}
	if l.Config.RuntimeDir != "/run/user/7/banger" || l.Config.SSHKeyPath != "/data/banger/ssh/id_ed25519" {
		t.Errorf("runtime_dir %q, ssh_key_path %q", l.Config.RuntimeDir, l.Config.SSHKeyPath)
	}
}

func TestExampleErrorText(t *testing.T) {
	_, p, err := loadFile(t, "# banger\n\nvmm = \"kvm\"\n")
	want := "config " + p + `:3: vmm = "kvm" is not allowed: use auto, firecracker or qemu`
	if err == nil || err.Error() != want {
		t.Fatalf("error = %v\nwant    %s", err, want)
	}
}

func TestSyntaxErrorLine(t *testing.T) {
	cases := []struct {
		content string
		line    int
	}{
		{"vmm = \"auto\"\ncow = \"copy\"\nlog_level = info\n", 3},
		{"# a\n# b\n# c\n# d\nvmm = \"auto\n", 5},
		{"default_vcpus = 1\n\ndefault_vcpus = 2\n", 3},
		{"[x\n", 1},
		{"a = 1\nb = \"\\q\"\n", 2},
		{"vmm = \"auto\"\n\n\nlog_level=", 4},
		{"vmm = 'qemu'\r\ncow = 'x\r\n", 2},
		{"a = 1\nb = \xff\n", 2},
		{"a = 1\n  = 3\n", 2},
		{"default_vcpus = 99999999999999999999\n", 1},
	}
	for _, tc := range cases {
		l, p, err := loadFile(t, tc.content)
		if l != nil {
			t.Errorf("%q: got a result despite the syntax error", tc.content)
		}
		ce := configError(t, err)
		if ce.File != p || ce.Line != tc.line || !strings.Contains(ce.Msg, "invalid TOML") {
			t.Errorf("%q: error %+v (%v), want line %d of %s", tc.content, ce, err, tc.line, p)
		}
	}
}

func TestUnknownKey(t *testing.T) {
	_, p, err := loadFile(t, "vmm = \"auto\"\n\n# typo below\nstate-dir = \"/x\"\n")
	ce := configError(t, err)
	if ce.File != p || ce.Line != 4 || ce.Key != "state-dir" {
		t.Fatalf("error %+v, want key state-dir at line 4", ce)
	}
	if !strings.Contains(ce.Msg, "did you mean state_dir?") || !strings.Contains(ce.Msg, "log_level") {
		t.Errorf("message %q should suggest state_dir and list the keys", ce.Msg)
	}
	for _, content := range []string{"\n\n[network]\nbridge_name = \"x\"\n", "\n\nnetwork.bridge = \"x\"\n"} {
		_, _, err := loadFile(t, content)
		ce := configError(t, err)
		if ce.Line != 3 || ce.Key != "network" {
			t.Errorf("%q: error %+v, want key network at line 3", content, ce)
		}
	}
}

func TestInvalidValues(t *testing.T) {
	cases := []struct {
		key, value string
		wantMsg    string
	}{
		{"vmm", `"kvm"`, "use auto, firecracker or qemu"},
		{"vmm", `1`, "use auto, firecracker or qemu"},
		{"cow", `"overlay"`, "use auto, dmsnap, reflink or copy"},
		{"log_level", `"trace"`, "use debug, info, warn or error"},
		{"default_image_name", `"Debian_12"`, "lowercase letters, digits and '-'"},
		{"default_image_name", `"-x"`, "not starting or ending with '-'"},
		{"default_image_name", `"` + strings.Repeat("a", 64) + `"`, "1 to 63"},
		{"default_memory", `"2GB"`, "write 2GiB"},
		{"default_memory", `"1.5G"`, "here 1536MiB"},
		{"default_memory", `1.5`, "fractional"},
		{"default_memory", `"-1G"`, "negative"},
		{"default_memory", `-5`, "greater than zero"},
		{"default_memory", `"0"`, "zero"},
		{"default_memory", `"64MiB"`, "at least 128MiB"},
		{"default_memory", `"2Q"`, `unknown unit "Q"`},
		{"default_memory", `true`, "use a size"},
		{"default_disk_size", `"256M"`, "at least 512MiB"},
		{"warm", `5`, "from 0 to 4"},
		{"warm", `-1`, "from 0 to 4"},
		{"warm", `"1"`, "from 0 to 4"},
		{"default_disk_size", `1000`, "at least 512MiB"},
		{"bridge_subnet", `"10.200.0.1/24"`, "not a network address (host bits are set): write 10.200.0.0/24"},
		{"bridge_subnet", `"192.168.77.130/25"`, "write 192.168.77.128/25"},
		{"bridge_subnet", `"fd00::/64"`, "not IPv4"},
		{"bridge_subnet", `"10.0.0.0/8"`, "/8 network is out of range"},
		{"bridge_subnet", `"10.0.0.0/30"`, "/30 network is out of range"},
		{"bridge_subnet", `"10.0.0.0"`, "CIDR"},
		{"bridge_subnet", `24`, "CIDR"},
		{"state_dir", `"var/lib/banger"`, "relative path"},
		{"state_dir", `""`, "empty"},
		{"ssh_key_path", `"id_ed25519"`, "relative path"},
		{"runtime_dir", `"./run"`, "relative path"},
		{"firecracker_bin", `"bin/firecracker"`, "relative path"},
		{"jailer_bin", `"jailer"`, "relative path"},
		{"qemu_bin", `"~user/qemu"`, "relative path"},
		{"qemu_bin", `["/usr/bin/qemu"]`, "absolute path"},
		{"catalog_base_url", `"ftp://example.test/cat"`, "scheme ftp is not supported"},
		{"catalog_base_url", `"example.test/cat"`, "no scheme"},
		{"catalog_base_url", `"https://"`, "no host"},
		{"catalog_base_url", `"http://bad host/"`, "does not parse"},
		{"catalog_base_url", `"file://srv/cat"`, "absolute path"},
		{"release_url", `""`, "it is empty"},
		{"release_url", `"ftp://example.test/rel"`, "scheme ftp is not supported"},
		{"release_url", `"example.test/rel"`, "no scheme"},
		{"release_url", `"https://"`, "no host"},
		{"release_url", `"file://srv/rel"`, "file:///srv/banger-releases"},
		{"release_url", `1`, "release tree"},
		{"bridge_name", `"this-name-is-too-long"`, "1 to 15 characters"},
		{"bridge_name", `"br 0"`, "whitespace"},
		{"bridge_name", `"br:0"`, "':'"},
		{"bridge_name", `"br/0"`, "'/'"},
		{"bridge_name", `""`, "1 to 15"},
		{"default_vcpus", `0`, "from 1 to 64"},
		{"default_vcpus", `65`, "from 1 to 64"},
		{"default_vcpus", `"2"`, "without quotes"},
		{"oci_max_entries", `999`, "from 1000 to 100000000"},
		{"oci_max_entries", `"500000"`, "without quotes"},
		{"oci_max_path_bytes", `"512KiB"`, "at least"},
	}
	for i, tc := range cases {
		// Put the bad line at a varying line number after good lines.
		pad := strings.Repeat("# filler\n", i%4) + "log_level = \"info\"\n"
		line := i%4 + 2
		if tc.key == "log_level" {
			pad = strings.Repeat("# filler\n", i%4+1)
		}
		content := pad + tc.key + " = " + tc.value + "\n" + "vmm = \"auto\"\n"
		if tc.key == "vmm" {
			content = pad + tc.key + " = " + tc.value + "\n"
		}
		l, p, err := loadFile(t, content)
		if l != nil {
			t.Errorf("%s = %s: got a result despite the bad value", tc.key, tc.value)
		}
		ce := configError(t, err)
		if ce.File != p || ce.Line != line || ce.Key != tc.key {
			t.Errorf("%s = %s: error at %s:%d key %q, want %s:%d key %q", tc.key, tc.value, ce.File, ce.Line, ce.Key, p, line, tc.key)
		}
		if !strings.Contains(ce.Msg, tc.wantMsg) {
			t.Errorf("%s = %s: message %q does not contain %q", tc.key, tc.value, ce.Msg, tc.wantMsg)
		}
		if !strings.HasPrefix(ce.Msg, tc.key+" = ") {
			t.Errorf("%s = %s: message %q does not start with the key and value", tc.key, tc.value, ce.Msg)
		}
	}
}

func TestEveryProblemReportedInLineOrder(t *testing.T) {
	_, p, err := loadFile(t, "vmm = \"x\"\ncow = \"auto\"\nbogus = 1\ndefault_vcpus = 0\n")
	if err == nil {
		t.Fatal("want errors")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 3 {
		t.Fatalf("want 3 problems, got %q", err)
	}
	for i, want := range []string{p + ":1: vmm", p + ":3: unknown key \"bogus\"", p + ":4: default_vcpus"} {
		if !strings.HasPrefix(lines[i], "config "+want) {
			t.Errorf("problem %d = %q, want prefix %q", i, lines[i], "config "+want)
		}
	}
	if ce := configError(t, err); ce.Line != 1 {
		t.Errorf("first *Error is line %d, want 1", ce.Line)
	}
}

func TestSourceString(t *testing.T) {
	cases := []struct {
		src  config.Source
		want string
	}{
		{config.Source{Kind: config.SourceDefault}, "default"},
		{config.Source{Kind: config.SourceFile, File: "/p/config.toml", Line: 3}, "/p/config.toml:3"},
		{config.Source{Kind: config.SourceEnv, Detail: "XDG_STATE_HOME"}, "env XDG_STATE_HOME"},
		{config.Source{Kind: config.SourceDefault, Detail: "from state_dir"}, "default (from state_dir)"},
	}
	for _, tc := range cases {
		if got := tc.src.String(); got != tc.want {
			t.Errorf("%+v.String() = %q, want %q", tc.src, got, tc.want)
		}
	}
}

func FuzzLoad(f *testing.F) {
	f.Add(fullFile)
	f.Add("vmm = \"kvm\"\n")
	f.Add("[x]\na = 1\n")
	f.Add("a.b.c = 1\n")
	f.Add("default_memory = \"1.5G\"\nbridge_subnet = \"10.0.0.1/16\"\n")
	f.Add("state_dir = \"~\"\nqemu_bin = \"\"\n")
	f.Fuzz(func(t *testing.T, content string) {
		dir := t.TempDir()
		p := filepath.Join(dir, "config.toml")
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		l, err := config.Load(config.Options{Path: p, Home: dir, Getenv: fakeEnv(nil)})
		if err != nil {
			var ce *config.Error
			if !errors.As(err, &ce) || ce.File != p || ce.Line < 0 {
				t.Fatalf("error %v (%T) is not a *config.Error about %s", err, err, p)
			}
			return
		}
		for _, s := range l.Settings() {
			if s.Source.Kind == config.SourceFile && s.Source.Line < 1 {
				t.Fatalf("%s came from the file without a line: %+v", s.Key, s.Source)
			}
		}
	})
}
