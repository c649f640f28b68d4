package update

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"

	"banger/internal/atomicfile"
)

// Journal is the content of JournalFile.
type Journal struct {
	From  string `json:"from"` // the version the .prev binaries are ("" when unknown)
	To    string `json:"to"`
	State string `json:"state"`
}

// maxJournalSize bounds what ReadJournal reads: a journal is one short
// JSON object.
const maxJournalSize = 4096

// maxVersionLen bounds a version named in the journal (a release, "dev",
// or a `git describe`).
const maxVersionLen = 100

// ReadJournal reads the install's journal; a missing one is the zero
// Journal and no error. The journal sits in a directory that others may
// share, so it is read only when it is a regular file (never through a
// symbolic link, never a FIFO or a device), owned by root, by this
// process's user or by the directory's owner, short, and made of known
// states and plain version strings; anything else is refused.
func (in *Install) ReadJournal() (Journal, error) {
	p := in.Path(JournalFile)
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return Journal{}, nil
	case errors.Is(err, syscall.ELOOP):
		return Journal{}, refused("the update journal %s is a symbolic link, which an update never makes: remove it (`rm %s`), then check the binaries there with `banger version`", p, p)
	case err != nil:
		return Journal{}, fmt.Errorf("read the update journal: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Journal{}, fmt.Errorf("read the update journal: %w", err)
	}
	if err := in.madeByUpdate(p, fi, -1); err != nil {
		return Journal{}, err
	}
	data, err := io.ReadAll(io.LimitReader(f, maxJournalSize+1))
	if err != nil {
		return Journal{}, fmt.Errorf("read the update journal: %w", err)
	}
	j, err := ParseJournal(data)
	if err != nil {
		return Journal{}, refused("the update journal %s is damaged (%v): remove it (`rm %s`), then check the binaries there with `banger version`", p, err, p)
	}
	return j, nil
}

// ParseJournal decodes a journal: one JSON object of at most
// maxJournalSize bytes, a state of at most 32 lowercase letters and "-",
// and versions of at most maxVersionLen letters, digits and ".-+_".
// Unknown fields and states are accepted (a later version, rolled back
// from, may have written them; an unknown state counts as no update under
// way), nothing that could mislead on a terminal is.
func ParseJournal(data []byte) (Journal, error) {
	var j Journal
	if len(data) > maxJournalSize {
		return j, fmt.Errorf("longer than %d bytes", maxJournalSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&j); err != nil {
		return Journal{}, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Journal{}, errors.New("more than one JSON value")
	}
	if !plainState(j.State) {
		return Journal{}, fmt.Errorf("%q is not a state", j.State)
	}
	for _, v := range []string{j.From, j.To} {
		if !plainVersion(v) {
			return Journal{}, fmt.Errorf("%q is not a version", v)
		}
	}
	return j, nil
}

// plainState reports whether s is short and made of "a"-"z" and "-".
func plainState(s string) bool {
	if len(s) > 32 {
		return false
	}
	for _, c := range s {
		if (c < 'a' || c > 'z') && c != '-' {
			return false
		}
	}
	return true
}

// plainVersion reports whether v is short and made of letters, digits and
// ".-+_" only: nothing that could mislead on a terminal.
func plainVersion(v string) bool {
	if len(v) > maxVersionLen {
		return false
	}
	for _, c := range v {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '+' || c == '_'
		if !ok {
			return false
		}
	}
	return true
}

func (in *Install) writeJournal(j Journal) error {
	// A version ReadJournal would refuse (a build stamped with an odd
	// string) is written as unknown, so that the journal stays readable.
	for _, v := range []*string{&j.From, &j.To} {
		if !plainVersion(*v) {
			*v = ""
		}
	}
	data, _ := json.Marshal(j)
	if err := atomicfile.WriteFile(in.Path(JournalFile), append(data, '\n'), atomicfile.Mode(0o644)); err != nil {
		return fmt.Errorf("write the update journal in %s: %w", in.Dir, err)
	}
	return nil
}

// madeByUpdate refuses a file (fi from Lstat or Fstat) that an update of
// this install cannot have made: not a regular file, or owned by someone
// other than root, this process's user, the install directory's owner and
// owner (the owner of the binary a .prev stands for; -1 for none): a file
// planted in a directory others may write to.
func (in *Install) madeByUpdate(p string, fi fs.FileInfo, owner int) error {
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return refused("%s is a symbolic link, which an update never makes: remove it (`rm %s`) and check the install", p, p)
	case !fi.Mode().IsRegular():
		return refused("%s is not a regular file, which an update never makes: remove it and check the install", p)
	}
	if in.ownedByUpdater(fi) {
		return nil
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) == owner {
		return nil
	}
	return refused("%s is owned by %s, neither root, you nor the owner of %s, so no update of this install made it: remove it (`rm %s`) and check the install", p, ownerOf(p), in.Dir, p)
}

// ownedByUpdater reports whether fi is owned by root, this process's user
// or the install directory's owner: those an update runs as.
func (in *Install) ownedByUpdater(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return true
	}
	if st.Uid == 0 || int(st.Uid) == os.Geteuid() {
		return true
	}
	d, err := os.Stat(in.Dir)
	if err != nil {
		return false
	}
	ds, ok := d.Sys().(*syscall.Stat_t)
	return ok && ds.Uid == st.Uid
}
