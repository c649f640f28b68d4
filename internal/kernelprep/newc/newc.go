package newc

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strconv"
	"strings"
)

const (
	magic      = "070701"
	headerLen  = 110
	trailer    = "TRAILER!!!"
	maxNameLen = 4096
)

// File type bits of the cpio mode field (the same values as Linux S_IF*).
const (
	TypeMask    = 0o170000
	TypeReg     = 0o100000
	TypeDir     = 0o040000
	TypeSymlink = 0o120000
	TypeChar    = 0o020000
	TypeBlock   = 0o060000
)

// Header describes one archive member.
type Header struct {
	Name      string // relative path without a leading "/" (e.g. "dev/console")
	Mode      uint32 // type bits | permission bits
	UID, GID  uint32
	NLink     uint32
	MTime     uint32
	Size      int64
	DevMajor  uint32
	DevMinor  uint32
	RDevMajor uint32 // for device nodes
	RDevMinor uint32
}

// Type returns the file type bits of the mode.
func (h *Header) Type() uint32 { return h.Mode & TypeMask }

// Writer writes a newc archive. Members get increasing inode numbers and a
// zero mtime, so the same input always gives the same bytes.
type Writer struct {
	w      io.Writer
	ino    uint32
	closed bool
	err    error
}

// NewWriter returns a Writer that writes to w. Close must be called to
// write the trailer; it does not close w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w, ino: 1} }

func cleanName(name string) (string, error) {
	n := strings.TrimLeft(name, "/")
	if n == "" || n == "." {
		return ".", nil
	}
	c := path.Clean(n)
	if c != n || c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("cpio member name %q is not a clean relative path", name)
	}
	if len(c) >= maxNameLen {
		return "", fmt.Errorf("cpio member name %q is longer than %d bytes", name[:64]+"...", maxNameLen)
	}
	return c, nil
}

// writeMember writes one header (its Size taken from data) and the data,
// each padded to four bytes.
func (w *Writer) writeMember(h Header, data []byte) error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return errors.New("cpio writer: write after Close")
	}
	if h.Name != trailer {
		n, err := cleanName(h.Name)
		if err != nil {
			return err
		}
		h.Name = n
	}
	h.Size = int64(len(data))
	if h.Size > 0xffffffff {
		return fmt.Errorf("cpio member %q: %d bytes is more than newc can hold (4 GiB)", h.Name, h.Size)
	}
	if h.NLink == 0 {
		h.NLink = 1
		if h.Type() == TypeDir {
			h.NLink = 2
		}
	}
	ino := w.ino
	if h.Name == trailer {
		ino = 0
	} else {
		w.ino++
	}
	fields := []uint32{ino, h.Mode, h.UID, h.GID, h.NLink, h.MTime, uint32(h.Size),
		h.DevMajor, h.DevMinor, h.RDevMajor, h.RDevMinor, uint32(len(h.Name) + 1), 0}
	var b strings.Builder
	b.WriteString(magic)
	for _, f := range fields {
		fmt.Fprintf(&b, "%08x", f)
	}
	b.WriteString(h.Name)
	b.WriteByte(0)
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
	if _, err := io.WriteString(w.w, b.String()); err != nil {
		w.err = fmt.Errorf("writing cpio header for %q: %w", h.Name, err)
		return w.err
	}
	if len(data) > 0 {
		if _, err := w.w.Write(data); err != nil {
			w.err = fmt.Errorf("writing cpio data for %q: %w", h.Name, err)
			return w.err
		}
		if pad := (4 - len(data)%4) % 4; pad > 0 {
			if _, err := w.w.Write(make([]byte, pad)); err != nil {
				w.err = fmt.Errorf("writing cpio padding for %q: %w", h.Name, err)
				return w.err
			}
		}
	}
	return nil
}

// Dir adds a directory with the given permission bits.
func (w *Writer) Dir(name string, perm fs.FileMode) error {
	return w.writeMember(Header{Name: name, Mode: TypeDir | uint32(perm.Perm())}, nil)
}

// File adds a regular file with the given permission bits and contents.
func (w *Writer) File(name string, perm fs.FileMode, data []byte) error {
	return w.writeMember(Header{Name: name, Mode: TypeReg | uint32(perm.Perm())}, data)
}

// Symlink adds a symbolic link name pointing at target.
func (w *Writer) Symlink(name, target string) error {
	if target == "" {
		return fmt.Errorf("cpio symlink %q has an empty target", name)
	}
	return w.writeMember(Header{Name: name, Mode: TypeSymlink | 0o777}, []byte(target))
}

// CharDev adds a character device node (the kernel creates it with mknod
// when it unpacks the archive, so no privileges are needed here).
func (w *Writer) CharDev(name string, perm fs.FileMode, major, minor uint32) error {
	return w.writeMember(Header{Name: name, Mode: TypeChar | uint32(perm.Perm()), RDevMajor: major, RDevMinor: minor}, nil)
}

// Close writes the trailer record. It does not close the underlying writer.
func (w *Writer) Close() error {
	if w.closed {
		return w.err
	}
	if err := w.writeMember(Header{Name: trailer}, nil); err != nil {
		return err
	}
	w.closed = true
	return nil
}

// Reader reads a newc archive member by member.
type Reader struct {
	r      *bufio.Reader
	remain int64 // data bytes of the current member not yet read
	pad    int64 // padding after the current member's data
	done   bool
}

// NewReader returns a Reader reading from r.
func NewReader(r io.Reader) *Reader { return &Reader{r: bufio.NewReader(r)} }

// Next skips to the next member and returns its header. It returns io.EOF
// after the trailer.
func (r *Reader) Next() (*Header, error) {
	if r.done {
		return nil, io.EOF
	}
	if _, err := io.CopyN(io.Discard, r.r, r.remain+r.pad); err != nil {
		return nil, fmt.Errorf("cpio: truncated member data: %w", noEOF(err))
	}
	r.remain, r.pad = 0, 0
	var hdr [headerLen]byte
	if _, err := io.ReadFull(r.r, hdr[:]); err != nil {
		return nil, fmt.Errorf("cpio: reading header: %w (archive truncated or missing its trailer)", noEOF(err))
	}
	if string(hdr[:6]) != magic {
		return nil, fmt.Errorf("cpio: bad magic %q, want %q (not a newc archive)", hdr[:6], magic)
	}
	var f [13]uint32
	for i := range f {
		s := string(hdr[6+8*i : 14+8*i])
		v, err := strconv.ParseUint(s, 16, 32)
		if err != nil {
			return nil, fmt.Errorf("cpio: header field %d is %q, not 8 hex digits", i, s)
		}
		f[i] = uint32(v)
	}
	nameSize := int(f[11])
	if nameSize < 1 || nameSize > maxNameLen {
		return nil, fmt.Errorf("cpio: name size %d out of range", nameSize)
	}
	name := make([]byte, nameSize)
	if _, err := io.ReadFull(r.r, name); err != nil {
		return nil, fmt.Errorf("cpio: reading name: %w", noEOF(err))
	}
	if name[nameSize-1] != 0 {
		return nil, errors.New("cpio: member name is not NUL-terminated")
	}
	namePad := (4 - (headerLen+nameSize)%4) % 4
	if _, err := io.CopyN(io.Discard, r.r, int64(namePad)); err != nil {
		return nil, fmt.Errorf("cpio: reading name padding: %w", noEOF(err))
	}
	h := &Header{
		Name: string(name[:nameSize-1]), Mode: f[1], UID: f[2], GID: f[3], NLink: f[4], MTime: f[5],
		Size: int64(f[6]), DevMajor: f[7], DevMinor: f[8], RDevMajor: f[9], RDevMinor: f[10],
	}
	if h.Name == trailer {
		r.done = true
		return nil, io.EOF
	}
	r.remain = h.Size
	r.pad = (4 - h.Size%4) % 4
	return h, nil
}

// Read reads the current member's data.
func (r *Reader) Read(p []byte) (int, error) {
	if r.remain <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.remain {
		p = p[:r.remain]
	}
	n, err := r.r.Read(p)
	r.remain -= int64(n)
	if err == io.EOF && r.remain > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
