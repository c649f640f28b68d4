package proto

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode"
)

func FuzzReadFrame(f *testing.F) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	_ = w.WriteJSON(TypeHello, Hello{Protocol: 1, Version: "dev"})
	_ = w.WriteJSON(TypeExec, ExecRequest{Argv: []string{"true"}})
	_ = w.WriteFrame(TypeStdin, []byte("hello"))
	_ = w.WriteFrame(TypeEOF, nil)
	f.Add(buf.Bytes())
	f.Add(header(TypeData, 0, MaxPayload+1))
	f.Add(header(TypeData, 0, 0xffffffff))
	f.Add(append(header(TypeData, 0, 4), "abcd"...))
	f.Add(header(Type(0xee), 3, 2))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data))
		for {
			fr, err := r.Next()
			if r.BufferCap() > MaxPayload {
				t.Fatalf("reader buffer grew to %d bytes", r.BufferCap())
			}
			if err != nil {
				if err != io.EOF && !IsFrameError(err) {
					t.Fatalf("unexpected error type %T: %v", err, err)
				}
				break
			}
			if !fr.Type.Known() || len(fr.Payload) > MaxPayload {
				t.Fatalf("accepted %s frame of %d bytes", fr.Type, len(fr.Payload))
			}
			// Whatever was accepted encodes back to the same bytes.
			var out bytes.Buffer
			if err := NewWriter(&out).WriteFrame(fr.Type, fr.Payload); err != nil {
				t.Fatalf("re-encode: %v", err)
			}
			back, err := NewReader(&out).Next()
			if err != nil || back.Type != fr.Type || !bytes.Equal(back.Payload, fr.Payload) {
				t.Fatalf("re-decode: %v", err)
			}
		}
		// The data reader must stop cleanly on the same input, and moving
		// part of the stream into a file must give the same bytes and the
		// same end as reading it.
		want, werr := io.ReadAll(NewDataReader(NewReader(bytes.NewReader(data)), TypeData))
		out, err := os.Create(filepath.Join(t.TempDir(), "out"))
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		dr := NewDataReader(NewReader(bytes.NewReader(data)), TypeData)
		var got []byte
		var gerr error
		for i := 0; gerr == nil; i++ {
			var n int
			if i%2 == 0 {
				p := make([]byte, 1+i%7)
				n, gerr = dr.Read(p)
				got = append(got, p[:n]...)
				if _, err := out.Write(p[:n]); err != nil {
					t.Fatal(err)
				}
			} else {
				off, _ := out.Seek(0, io.SeekCurrent)
				n, gerr = dr.ReadToFile(out, 1+i*13)
				p := make([]byte, n)
				if _, err := out.ReadAt(p, off); err != nil {
					t.Fatal(err)
				}
				got = append(got, p...)
			}
		}
		if errors.Is(gerr, io.EOF) {
			gerr = nil // what io.ReadAll reports as success
		}
		if !bytes.Equal(got, want) || fmt.Sprint(gerr) != fmt.Sprint(werr) {
			t.Fatalf("moving to a file gave %d bytes and %v; reading gave %d bytes and %v", len(got), gerr, len(want), werr)
		}
	})
}

func FuzzHello(f *testing.F) {
	f.Add([]byte(`{"protocol":1,"version":"dev","capabilities":["exec","pty"]}`))
	f.Add([]byte(`{"protocol":0,"version":""}`))
	f.Add([]byte(`{"protocol":1e99,"version":"v1"}`))
	f.Add([]byte(`{"protocol":1,"version":"v1","capabilities":null}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"version":"\u0000"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > MaxPayload {
			t.Skip("a frame never carries more than MaxPayload")
		}
		h, err := DecodeHello(data)
		if err != nil {
			if !IsFrameError(err) {
				t.Fatalf("error %T is not a frame error: %v", err, err)
			}
			return
		}
		if err := h.Validate(); err != nil {
			t.Fatalf("decoded hello does not validate: %v", err)
		}
		b, err := json.Marshal(h)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		h2, err := DecodeHello(b)
		if err != nil || h2.Protocol != h.Protocol || h2.Version != h.Version || !slices.Equal(h2.Capabilities, h.Capabilities) {
			t.Fatalf("round trip changed %+v into %+v (%v)", h, h2, err)
		}
		if err := CheckCompatible(Version, h.Protocol); (err == nil) != (h.Protocol == Version) {
			t.Fatalf("compatibility of %d with %d: %v", h.Protocol, Version, err)
		}
	})
}

func FuzzResumedRequest(f *testing.F) {
	good, _ := json.Marshal(goodResumed())
	f.Add(good)
	f.Add([]byte(`{"id":"x","unix_nano":1,"entropy":"AAAA"}`))
	f.Add([]byte(`{"id":"x","network":{"address":"1.2.3.4/33","mac":"ff:ff:ff:ff:ff:ff"}}`))
	f.Add([]byte(`{"network":{"address":"","dns":["::1%eth0"]}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > MaxPayload {
			t.Skip("a frame never carries more than MaxPayload")
		}
		r, err := DecodeResumedRequest(data)
		if err != nil {
			var re *RemoteError
			if !IsFrameError(err) && !(errors.As(err, &re) && re.Code == CodeBadRequest) {
				t.Fatalf("error %T is neither a frame error nor a bad request: %v", err, err)
			}
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("decoded request does not validate: %v", err)
		}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if _, err := DecodeResumedRequest(b); err != nil {
			t.Fatalf("re-encoded request refused: %v", err)
		}
	})
}

func FuzzResumedResult(f *testing.F) {
	good, _ := json.Marshal(ResumedResult{Steps: []ResumedStep{{Duty: "entropy", Status: ResumeDone}}, HostKeys: []string{testHostKey}})
	f.Add(good)
	f.Add([]byte(`{"steps":[{"duty":"\u001b","status":"failed"}],"host_keys":[""]}`))
	f.Add([]byte(`{"steps":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > MaxPayload {
			t.Skip("a frame never carries more than MaxPayload")
		}
		r, err := DecodeResumedResult(data)
		if err != nil {
			if !IsFrameError(err) {
				t.Fatalf("error %T is not a frame error: %v", err, err)
			}
			return
		}
		if len(r.Steps) == 0 || len(r.Steps) > maxResumeSteps || len(r.HostKeys) > maxResumeHostKeys {
			t.Fatalf("accepted %d steps and %d keys", len(r.Steps), len(r.HostKeys))
		}
		for _, s := range r.Steps {
			for _, txt := range []string{s.Duty, s.Detail, s.Error} {
				if strings.ContainsFunc(txt, func(r rune) bool { return !unicode.IsPrint(r) }) || len(txt) > maxResumeText+64 {
					t.Fatalf("step text %q not cleaned", txt)
				}
			}
			if s.Status == ResumeFailed && s.Error == "" {
				t.Fatal("a failed step without an error")
			}
		}
		for _, k := range r.HostKeys {
			if err := validHostKey(k); err != nil {
				t.Fatalf("accepted host key %q: %v", k, err)
			}
		}
	})
}
