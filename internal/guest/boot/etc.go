package boot

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

const defaultHosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"

// applyHostname sets the kernel's host name, /etc/hostname and the
// 127.0.1.1 line of /etc/hosts.
func applyHostname(_ context.Context, s Settings, env *Env) (Status, string, error) {
	if s.Hostname == "" {
		return StatusSkipped, "no banger.hostname", nil
	}
	name := s.Hostname
	if err := ValidHostname(name); err != nil {
		return StatusFailed, "", err
	}
	var errs []error
	var changed []string
	if err := env.SetHostname(name); err != nil {
		errs = append(errs, fmt.Errorf("set the kernel host name to %q: %w", name, err))
	}
	hostnameFile := filepath.Join(env.EtcDir, "hostname")
	if c, err := writeFileAtomic(hostnameFile, []byte(name+"\n"), 0o644, -1, -1); err != nil {
		errs = append(errs, err)
	} else if c {
		changed = append(changed, hostnameFile)
	}
	hostsFile := filepath.Join(env.EtcDir, "hosts")
	if c, err := ensureHostsFile(hostsFile, name); err != nil {
		errs = append(errs, err)
	} else if c {
		changed = append(changed, hostsFile)
	}
	st, detail := joinChanges(changed)
	if detail != "" {
		detail = "; " + detail
	}
	return st, name + detail, errors.Join(errs...)
}

// ensureHostsFile puts name on the 127.0.1.1 line of the hosts file at path,
// creating the file with the usual localhost lines when it is missing.
func ensureHostsFile(path, name string) (bool, error) {
	old, perm := defaultHosts, os.FileMode(0o644)
	if data, err := os.ReadFile(path); err == nil {
		old = string(data)
		if fi, err := os.Stat(path); err == nil {
			perm = fi.Mode().Perm()
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	return writeFileAtomic(path, []byte(EnsureHostsLine(old, name)), perm, -1, -1)
}

// EnsureHostsLine returns the hosts file content with name on a 127.0.1.1
// line, as Debian does. A 127.0.1.1 line that already lists name is left
// alone; otherwise the first 127.0.1.1 line is replaced, or a new one goes
// after the 127.0.0.1 line (or at the end). Other lines are kept as they are.
func EnsureHostsLine(content, name string) string {
	lines := strings.Split(strings.TrimSuffix(content, "\n"), "\n")
	if content == "" {
		lines = nil
	}
	want := "127.0.1.1\t" + name
	first, after := -1, -1
	for i, line := range lines {
		fields := strings.Fields(strings.SplitN(line, "#", 2)[0])
		if len(fields) == 0 {
			continue
		}
		switch fields[0] {
		case "127.0.1.1":
			if slices.Contains(fields[1:], name) {
				return ensureNewline(content)
			}
			if first < 0 {
				first = i
			}
		case "127.0.0.1":
			if after < 0 {
				after = i
			}
		}
	}
	switch {
	case first >= 0:
		lines[first] = want
	case after >= 0:
		lines = slices.Insert(lines, after+1, want)
	default:
		lines = append(lines, want)
	}
	return strings.Join(lines, "\n") + "\n"
}

func ensureNewline(s string) string {
	if s != "" && !strings.HasSuffix(s, "\n") {
		return s + "\n"
	}
	return s
}

// applyDNS writes /etc/resolv.conf. When it is a symlink (to
// systemd-resolved's stub file, say) the link is replaced by a plain file:
// the host's settings win over a resolver the image would start.
func applyDNS(_ context.Context, s Settings, env *Env) (Status, string, error) {
	if len(s.DNS) == 0 {
		return StatusSkipped, "no banger.dns", nil
	}
	path := filepath.Join(env.EtcDir, "resolv.conf")
	wasLink := false
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		wasLink = true
	}
	c, err := writeFileAtomic(path, []byte(ResolvConf(s.DNS)), 0o644, -1, -1)
	if err != nil {
		return StatusFailed, "", err
	}
	if !c {
		return StatusUnchanged, "", nil
	}
	detail := "wrote " + path
	if wasLink {
		detail += ", replacing a symlink"
	}
	return StatusDone, detail, nil
}

// ResolvConf is the resolv.conf content for the given name servers.
func ResolvConf(servers []netip.Addr) string {
	var b strings.Builder
	b.WriteString("# Written at boot by banger-vsock-agent from the kernel parameter banger.dns.\n")
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	return b.String()
}
