package proto

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestHelloValidate(t *testing.T) {
	good := Hello{Protocol: 1, Version: "v0.3.1-4-gabcdef", Capabilities: []string{CapExec, CapSyncTime}}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid hello refused: %v", err)
	}
	bad := map[string]Hello{
		"zero protocol":  {Protocol: 0, Version: "dev"},
		"empty version":  {Protocol: 1},
		"space":          {Protocol: 1, Version: "v 1"},
		"control char":   {Protocol: 1, Version: "v1\x1b[2J"},
		"long version":   {Protocol: 1, Version: strings.Repeat("v", maxVersionLen+1)},
		"upper cap":      {Protocol: 1, Version: "dev", Capabilities: []string{"Exec"}},
		"empty cap":      {Protocol: 1, Version: "dev", Capabilities: []string{""}},
		"too many caps":  {Protocol: 1, Version: "dev", Capabilities: make([]string, maxCapabilities+1)},
		"long cap":       {Protocol: 1, Version: "dev", Capabilities: []string{strings.Repeat("a", maxCapabilityLen+1)}},
		"negative proto": {Protocol: -1, Version: "dev"},
	}
	for name, h := range bad {
		if err := h.Validate(); err == nil {
			t.Errorf("%s: accepted %+v", name, h)
		}
	}
}

func TestDecodeHello(t *testing.T) {
	h, err := DecodeHello([]byte(`{"protocol":1,"version":"dev","capabilities":["exec"],"future":true}`))
	if err != nil || h.Protocol != 1 || !h.Has(CapExec) || h.Has(CapPTY) {
		t.Fatalf("got %+v, %v", h, err)
	}
	for _, in := range []string{``, `[]`, `{"protocol":"1","version":"dev"}`, `{"protocol":1}`} {
		if _, err := DecodeHello([]byte(in)); !IsFrameError(err) {
			t.Errorf("%q: got %v, want a malformed-frame error", in, err)
		}
	}
}

func TestVersionErrorNamesBothVersions(t *testing.T) {
	err := CheckCompatible(2, 1)
	var ve *VersionError
	if !errors.As(err, &ve) {
		t.Fatalf("got %v, want VersionError", err)
	}
	for _, want := range []string{"version 1", "version 2", "banger-vsock-agent"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not mention %q", err, want)
		}
	}
	if err := CheckCompatible(1, 3); err == nil || !strings.Contains(err.Error(), "banger on the host") {
		t.Errorf("newer agent: %v", err)
	}
	if err := CheckCompatible(Version, Version); err != nil {
		t.Errorf("same version refused: %v", err)
	}
	if got := ErrorFor(errors.New("disk full")).Code; got != CodeFailed {
		t.Errorf("plain error code %q", got)
	}
	if got := ErrorFor(CheckCompatible(1, 2)).Code; got != CodeVersion {
		t.Errorf("version error code %q", got)
	}
}

func TestExecRequestValidate(t *testing.T) {
	ok := ExecRequest{Argv: []string{"sh", "-c", "true"}, Env: []string{"A=1", "B="}, Dir: "/tmp"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid request refused: %v", err)
	}
	bad := []ExecRequest{
		{},
		{Argv: []string{""}},
		{Argv: []string{"sh", "a\x00b"}},
		{Argv: []string{"sh"}, Env: []string{"NOEQUALS"}},
		{Argv: []string{"sh"}, Env: []string{"=v"}},
		{Argv: []string{"sh"}, Dir: "relative"},
	}
	for _, r := range bad {
		if err := r.Validate(); err == nil {
			t.Errorf("accepted %+v", r)
		}
	}
}

// A guest's error message is printed by the CLI as part of banger's error:
// it must not carry escape sequences or line breaks to the terminal, nor be
// of any length.
func TestDecodeErrorMakesThePeersWordsPrintable(t *testing.T) {
	msg := "no such file\x1b]52;c;cm0gLXJmIH4K\x07\n\x1b[2Jbanger: done\u202e\u0085 ok \u00e9"
	m, _ := json.Marshal(msg)
	f := Frame{Type: TypeError, Payload: []byte(`{"code":"failed\u001b[1m","message":` + string(m) + `}`)}
	err := DecodeError(f)
	got := err.Error()
	for _, bad := range []string{"\x1b", "\x07", "\n", "\u202e", "\u0085"} {
		if strings.Contains(got, bad) {
			t.Errorf("decoded message %q still holds %q", got, bad)
		}
	}
	if !strings.Contains(got, `no such file\x1b]52;c;`) || !strings.Contains(got, "ok \u00e9") {
		t.Errorf("decoded message %q lost the printable text or shows the escapes unreadably", got)
	}
	if c := err.(*RemoteError).Code; strings.Contains(c, "\x1b") {
		t.Errorf("code %q holds an escape", c)
	}
	long := Frame{Type: TypeError, Payload: []byte(`{"code":"failed","message":"` + strings.Repeat("a", 1<<20) + `"}`)}
	if n := len(DecodeError(long).Error()); n > 4096 {
		t.Errorf("a 1 MiB message decoded to %d bytes", n)
	}
}
