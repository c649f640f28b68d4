package proto

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"unicode"
)

// A real ed25519 public key line (made once with ssh-keygen; public, not a secret).
const testHostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHT9GQdX3uri+ldsC3gqKN+TsYffIeM6JwZM5A/5k824 root@clone"

func goodResumed() ResumedRequest {
	return ResumedRequest{
		ID:       "vm-0123",
		Hostname: "clone-1",
		Network: &ResumedNetwork{
			Iface:   "eth0",
			MAC:     "02:fc:00:00:00:05",
			Address: netip.MustParsePrefix("172.16.0.5/24"),
			Gateway: netip.MustParseAddr("172.16.0.1"),
			DNS:     []netip.Addr{netip.MustParseAddr("172.16.0.1")},
		},
		UnixNano: 1_800_000_000_000_000_000,
		Entropy:  bytes.Repeat([]byte{0xa5}, MinResumeEntropy),
	}
}

func TestResumedRequestRoundTrip(t *testing.T) {
	want := goodResumed()
	var buf bytes.Buffer
	if err := NewWriter(&buf).WriteJSON(TypeResumed, want); err != nil {
		t.Fatal(err)
	}
	f, err := NewReader(&buf).Next()
	if err != nil || f.Type != TypeResumed || f.Type.String() != "resumed" {
		t.Fatalf("frame %v, %v", f.Type, err)
	}
	got, err := DecodeResumedRequest(f.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip gave %+v, want %+v", got, want)
	}
	if !strings.Contains(string(f.Payload), `"address":"172.16.0.5/24"`) {
		t.Errorf("address not in its text form: %s", f.Payload)
	}
	// Without a network or a gateway the optional fields stay out.
	want.Network.Gateway = netip.Addr{}
	b, _ := json.Marshal(want)
	if strings.Contains(string(b), "gateway") {
		t.Errorf("zero gateway encoded: %s", b)
	}
	if _, err := DecodeResumedRequest(b); err != nil {
		t.Errorf("no gateway: %v", err)
	}
}

func TestResumedRequestValidate(t *testing.T) {
	bad := map[string]func(*ResumedRequest){
		"no id":           func(r *ResumedRequest) { r.ID = "" },
		"id with slash":   func(r *ResumedRequest) { r.ID = "../x" },
		"long id":         func(r *ResumedRequest) { r.ID = strings.Repeat("a", maxResumeID+1) },
		"bad hostname":    func(r *ResumedRequest) { r.Hostname = "-x" },
		"hostname space":  func(r *ResumedRequest) { r.Hostname = "a b" },
		"no time":         func(r *ResumedRequest) { r.UnixNano = 0 },
		"little entropy":  func(r *ResumedRequest) { r.Entropy = r.Entropy[:MinResumeEntropy-1] },
		"much entropy":    func(r *ResumedRequest) { r.Entropy = make([]byte, MaxResumeEntropy+1) },
		"multicast mac":   func(r *ResumedRequest) { r.Network.MAC = "01:00:5e:00:00:01" },
		"zero mac":        func(r *ResumedRequest) { r.Network.MAC = "00:00:00:00:00:00" },
		"long mac":        func(r *ResumedRequest) { r.Network.MAC = "02:00:00:00:00:00:00:01" },
		"dotted mac":      func(r *ResumedRequest) { r.Network.MAC = "0200.0000.0001" },
		"no address":      func(r *ResumedRequest) { r.Network.Address = netip.Prefix{} },
		"v6 address":      func(r *ResumedRequest) { r.Network.Address = netip.MustParsePrefix("fd00::5/64") },
		"/0 address":      func(r *ResumedRequest) { r.Network.Address = netip.MustParsePrefix("172.16.0.5/0") },
		"v6 gateway":      func(r *ResumedRequest) { r.Network.Gateway = netip.MustParseAddr("fd00::1") },
		"iface slash":     func(r *ResumedRequest) { r.Network.Iface = "a/b" },
		"long iface":      func(r *ResumedRequest) { r.Network.Iface = "abcdefghijklmnop" },
		"many dns":        func(r *ResumedRequest) { r.Network.DNS = make([]netip.Addr, maxResumeDNS+1) },
		"unspecified dns": func(r *ResumedRequest) { r.Network.DNS = []netip.Addr{netip.IPv4Unspecified()} },
	}
	for name, mut := range bad {
		r := goodResumed()
		mut(&r)
		if err := r.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
		b, _ := json.Marshal(r)
		_, err := DecodeResumedRequest(b)
		var re *RemoteError
		if !errors.As(err, &re) || re.Code != CodeBadRequest {
			t.Errorf("%s: decode gave %v, want a bad-request error", name, err)
		}
	}
	r := goodResumed()
	r.Network = nil
	r.Hostname = ""
	if err := r.Validate(); err != nil {
		t.Errorf("a request with only id, time and entropy: %v", err)
	}
	if _, err := DecodeResumedRequest([]byte(`{"id":`)); !IsFrameError(err) {
		t.Errorf("broken JSON: %v, want a frame error", err)
	}
}

func TestDecodeResumedResult(t *testing.T) {
	good := ResumedResult{
		Steps:    []ResumedStep{{Duty: "entropy", Status: ResumeDone}, {Duty: "clock", Status: ResumeFailed, Error: "EPERM"}},
		HostKeys: []string{testHostKey},
	}
	b, _ := json.Marshal(good)
	got, err := DecodeResumedResult(b)
	if err != nil || !reflect.DeepEqual(got, good) {
		t.Fatalf("got %+v, %v", got, err)
	}
	if f := got.Failed(); len(f) != 1 || f[0].Duty != "clock" {
		t.Errorf("Failed() = %+v", f)
	}
	bad := map[string]string{
		"no steps":      `{"steps":[]}`,
		"odd status":    `{"steps":[{"duty":"x","status":"maybe"}]}`,
		"not a key":     `{"steps":[{"duty":"x","status":"done"}],"host_keys":["hello"]}`,
		"key and junk":  `{"steps":[{"duty":"x","status":"done"}],"host_keys":["` + testHostKey + `\n` + testHostKey + `"]}`,
		"key options":   `{"steps":[{"duty":"x","status":"done"}],"host_keys":["command=\"x\" ` + testHostKey + `"]}`,
		"many steps":    `{"steps":[` + strings.Repeat(`{"duty":"x","status":"done"},`, maxResumeSteps) + `{"duty":"x","status":"done"}]}`,
		"not an object": `[]`,
	}
	for name, in := range bad {
		if _, err := DecodeResumedResult([]byte(in)); !IsFrameError(err) {
			t.Errorf("%s: got %v, want a frame error", name, err)
		}
	}
	// The guest's words are made printable and bounded; a failure without
	// words still says it failed.
	res, err := DecodeResumedResult([]byte(`{"steps":[{"duty":"a\u001b[2J","status":"failed","detail":"` + strings.Repeat("d", 5000) + `"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	s := res.Steps[0]
	if strings.ContainsFunc(s.Duty, func(r rune) bool { return !unicode.IsPrint(r) }) || len(s.Detail) > maxResumeText+64 || s.Error == "" {
		t.Errorf("step not cleaned: %+v", s)
	}
}
