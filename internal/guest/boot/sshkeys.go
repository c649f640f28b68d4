package boot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"
)

// applySSHKeys merges s.SSHKeys into root's authorized_keys: the directory
// is made 0700 and the file 0600, both owned by root when the agent runs as
// root. Existing lines are kept; a key already present (same key and
// options, whatever its comment) is not added again.
func applySSHKeys(_ context.Context, s Settings, env *Env) (Status, string, error) {
	if len(s.SSHKeys) == 0 {
		return StatusSkipped, "no banger.ssh_key", nil
	}
	var errs []error
	var keys []string
	for i, line := range s.SSHKeys {
		line = strings.TrimSpace(line)
		if err := ValidKeyLine(line); err != nil {
			errs = append(errs, fmt.Errorf("kernel parameter banger.ssh_key #%d: %w; key not installed", i+1, err))
			continue
		}
		keys = append(keys, line)
	}
	if len(keys) == 0 {
		return StatusFailed, "", errors.Join(errs...)
	}
	uid, gid := -1, -1
	if os.Geteuid() == 0 {
		uid, gid = 0, 0
	}
	dir := filepath.Join(env.RootHome, ".ssh")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return StatusFailed, "", errors.Join(append(errs, fmt.Errorf("create %s: %w", dir, err))...)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		errs = append(errs, fmt.Errorf("make %s private: %w", dir, err))
	}
	if uid != -1 {
		if err := os.Lchown(dir, uid, gid); err != nil {
			errs = append(errs, fmt.Errorf("give %s to root: %w", dir, err))
		}
	}
	path := filepath.Join(dir, "authorized_keys")
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return StatusFailed, "", errors.Join(append(errs, fmt.Errorf("read %s: %w", path, err))...)
	}
	merged, added := MergeAuthorizedKeys(string(old), keys)
	changed, err := writeFileAtomic(path, []byte(merged), 0o600, uid, gid)
	if err != nil {
		errs = append(errs, err)
	}
	st := StatusUnchanged
	if changed {
		st = StatusDone
	}
	return st, fmt.Sprintf("%d of %d keys added to %s", added, len(keys), path), errors.Join(errs...)
}

// MergeAuthorizedKeys returns the authorized_keys content old with every
// line of keys that it lacks appended, and how many were appended. Lines of
// old (comments, unparsable lines included) are kept as they are. Two lines
// hold the same key when their key and options match; comments do not
// count.
func MergeAuthorizedKeys(old string, keys []string) (string, int) {
	have := map[string]bool{}
	for _, line := range strings.Split(old, "\n") {
		if id, ok := keyIdentity(line); ok {
			have[id] = true
		}
	}
	var b strings.Builder
	b.WriteString(ensureNewline(old))
	added := 0
	for _, line := range keys {
		id, ok := keyIdentity(line)
		if !ok || have[id] {
			continue
		}
		have[id] = true
		b.WriteString(strings.TrimSpace(line))
		b.WriteByte('\n')
		added++
	}
	return b.String(), added
}

func keyIdentity(line string) (string, bool) {
	line = strings.TrimSpace(line)
	if line == "" || strings.HasPrefix(line, "#") {
		return "", false
	}
	pub, _, opts, rest, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil || len(strings.TrimSpace(string(rest))) != 0 {
		return "", false
	}
	return strings.Join(opts, ",") + "\x00" + string(pub.Marshal()), true
}
