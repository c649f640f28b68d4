package client_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/guest/agent"
	"banger/internal/guest/client"
	"banger/internal/guest/proto"
)

// copySizes are file sizes around a data frame and the size from which
// files are sent on their own (with sendfile on sockets): empty, one byte,
// just under that size, several frames, and not a multiple of a frame.
var copySizes = []int{0, 1, 128<<10 - 1, 4 * proto.ChunkSize, 3*proto.ChunkSize + 17}

func TestCopyFilesOfEverySize(t *testing.T) {
	src := filepath.Join(t.TempDir(), "sizes")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{}
	for _, n := range copySizes {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(i*13 + i>>10 + n)
		}
		name := fmt.Sprintf("f%d", n)
		if err := os.WriteFile(filepath.Join(src, name), data, 0o640); err != nil {
			t.Fatal(err)
		}
		want[name] = data
	}
	check := func(t *testing.T, dir string) {
		t.Helper()
		for name, data := range want {
			got, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("%s: %d bytes, %v; want %d bytes", name, len(got), err, len(data))
			}
		}
	}
	eachTransport(t, agent.Options{}, func(t *testing.T, c *client.Client) {
		ctx := context.Background()
		guest := t.TempDir()
		if err := c.CopyIn(ctx, src, guest); err != nil {
			t.Fatal(err)
		}
		check(t, filepath.Join(guest, "sizes"))
		host := t.TempDir()
		if err := c.CopyOut(ctx, filepath.Join(guest, "sizes"), host, client.CopyOutOptions{}); err != nil {
			t.Fatal(err)
		}
		check(t, filepath.Join(host, "sizes"))
	})
}

// cutReader gives the first n bytes of r, then err.
type cutReader struct {
	r   io.Reader
	n   int
	err error
}

func (c *cutReader) Read(p []byte) (int, error) {
	if c.n == 0 {
		return 0, c.err
	}
	k, err := c.r.Read(p[:min(len(p), c.n)])
	c.n -= k
	return k, err
}

func TestCopyInCutShortLeavesNoPartialFile(t *testing.T) {
	size := 3*proto.ChunkSize + 17
	var full bytes.Buffer
	tw := tar.NewWriter(&full)
	if err := tw.WriteHeader(&tar.Header{Name: "big", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(size)}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(bytes.Repeat([]byte("b"), size)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	half := 512 + size/2
	cases := map[string]struct {
		err  error  // what the host's source ends with
		want string // in the error CopyInTar returns
	}{
		"source ends":  {io.EOF, "unexpected EOF"},
		"source fails": {errors.New("disk on fire"), "disk on fire"},
	}
	eachTransport(t, agent.Options{}, func(t *testing.T, c *client.Client) {
		for name, tc := range cases {
			dst := t.TempDir()
			err := c.CopyInTar(context.Background(), &cutReader{r: bytes.NewReader(full.Bytes()), n: half, err: tc.err}, dst)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: got %v, want an error containing %q", name, err, tc.want)
			}
			if _, err := os.Lstat(filepath.Join(dst, "big")); err == nil {
				t.Errorf("%s: the partial file was left in the guest", name)
			}
		}
		// The agent is still serving.
		if _, err := c.Health(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
}
