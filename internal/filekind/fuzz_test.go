package filekind_test

import (
	"bytes"
	"encoding/binary"
	"testing"

	"banger/internal/filekind"
)

// FuzzExt4 feeds arbitrary files to the ext4 sniffer: it must never panic,
// and what it accepts must fit in the file and carry the magic.
func FuzzExt4(f *testing.F) {
	sb := make([]byte, 2048)
	binary.LittleEndian.PutUint16(sb[1024+0x38:], 0xEF53)
	binary.LittleEndian.PutUint32(sb[1024+0x04:], 2)
	binary.LittleEndian.PutUint32(sb[1024+0x00:], 16)
	binary.LittleEndian.PutUint32(sb[1024+0x20:], 8192)
	binary.LittleEndian.PutUint32(sb[1024+0x28:], 16)
	f.Add(sb)
	f.Add([]byte("root:*:19000:0:99999:7:::\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		size, err := filekind.Ext4(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		if size <= 0 || size > int64(len(data)) {
			t.Fatalf("accepted a filesystem of %d bytes in a file of %d", size, len(data))
		}
		if binary.LittleEndian.Uint16(data[1024+0x38:]) != 0xEF53 {
			t.Fatal("accepted a superblock without the ext4 magic")
		}
	})
}

// FuzzInitrd feeds arbitrary bytes to the initrd sniffer: it must never
// panic or hang, and what it accepts bare must start with a newc magic.
func FuzzInitrd(f *testing.F) {
	archive := cpioArchive(f)
	for _, c := range []string{"cpio", "gzip", "zstd", "xz", "lzma", "lz4"} {
		f.Add(compress(f, c, archive))
	}
	f.Add([]byte("070701"))
	f.Add([]byte("\x02\x21\x4c\x18\xff\xff\xff\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		kind, err := filekind.Initrd(bytes.NewReader(data))
		if err == nil && kind == "cpio" && !bytes.HasPrefix(data, []byte("07070")) {
			t.Fatalf("accepted %q as a bare cpio archive", data[:min(len(data), 16)])
		}
	})
}
