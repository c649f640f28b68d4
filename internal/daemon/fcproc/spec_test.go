package fcproc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// specPath is Firecracker's own API description (swagger 2.0, Apache 2.0,
// copied unchanged from the v1.14.2 release), which the client's requests
// are checked against. It belongs to the repository: a checkout without it
// is broken, so the tests fail rather than skip.
const specPath = "testdata/firecracker-v1.14.2.yaml"

type specSchema struct {
	Ref        string                 `yaml:"$ref"`
	Type       string                 `yaml:"type"`
	Required   []string               `yaml:"required"`
	Properties map[string]*specSchema `yaml:"properties"`
	Enum       []string               `yaml:"enum"`
	Minimum    *float64               `yaml:"minimum"`
	Maximum    *float64               `yaml:"maximum"`
	Items      *specSchema            `yaml:"items"`
}

type specParam struct {
	Name     string      `yaml:"name"`
	In       string      `yaml:"in"`
	Required bool        `yaml:"required"`
	Schema   *specSchema `yaml:"schema"`
}

type specOp struct {
	Parameters []specParam             `yaml:"parameters"`
	Responses  map[string]specResponse `yaml:"responses"`
}

type specResponse struct {
	Schema *specSchema `yaml:"schema"`
}

type apiSpec struct {
	Paths       map[string]map[string]specOp `yaml:"paths"`
	Definitions map[string]*specSchema       `yaml:"definitions"`
}

// loadSpec reads and parses the spec; a missing or unreadable file fails
// the test.
func loadSpec(t testing.TB) *apiSpec {
	t.Helper()
	data, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatalf("read the Firecracker API spec the client is checked against: %v (restore it: git checkout -- internal/daemon/fcproc/%s)", err, specPath)
	}
	var s apiSpec
	if err := yaml.Unmarshal(data, &s); err != nil {
		t.Fatalf("parse %s: %v", specPath, err)
	}
	if len(s.Paths) == 0 || len(s.Definitions) == 0 {
		t.Fatalf("%s: no paths or definitions", specPath)
	}
	return &s
}

// trySpec is the name fake_test.go uses; the spec is never absent now, so
// it is loadSpec and never returns nil.
func trySpec(t testing.TB) *apiSpec { return loadSpec(t) }

// findOp returns the spec operation for a concrete method and path.
func (s *apiSpec) findOp(method, path string) (string, *specOp, bool) {
	for tmpl, ops := range s.Paths {
		re := "^" + regexp.MustCompile(`\\\{[^}]+\\\}`).ReplaceAllString(regexp.QuoteMeta(tmpl), `[^/]+`) + "$"
		if !regexp.MustCompile(re).MatchString(path) {
			continue
		}
		op, ok := ops[strings.ToLower(method)]
		if !ok {
			return tmpl, nil, false
		}
		return tmpl, &op, true
	}
	return "", nil, false
}

// checkRequest validates one request against the spec and returns the
// problems found.
func (s *apiSpec) checkRequest(method, path string, body []byte) []string {
	tmpl, op, ok := s.findOp(method, path)
	if !ok {
		return []string{fmt.Sprintf("%s %s is not in the spec (template %q)", method, path, tmpl)}
	}
	var bodyParam *specParam
	for i := range op.Parameters {
		if op.Parameters[i].In == "body" {
			bodyParam = &op.Parameters[i]
		}
	}
	if bodyParam == nil {
		if len(body) > 0 {
			return []string{fmt.Sprintf("%s %s takes no body, sent %s", method, tmpl, body)}
		}
		return nil
	}
	if len(body) == 0 {
		if bodyParam.Required {
			return []string{fmt.Sprintf("%s %s requires a body", method, tmpl)}
		}
		return nil
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return []string{fmt.Sprintf("body is not JSON: %v", err)}
	}
	return s.validate(bodyParam.Schema, v, "body")
}

func (s *apiSpec) resolve(sc *specSchema) *specSchema {
	for sc != nil && sc.Ref != "" {
		name := strings.TrimPrefix(sc.Ref, "#/definitions/")
		sc = s.Definitions[name]
	}
	return sc
}

// validate checks v against sc: known properties only, required ones
// present, JSON types, enums and integer bounds.
func (s *apiSpec) validate(sc *specSchema, v any, at string) []string {
	ref := sc.Ref
	sc = s.resolve(sc)
	if sc == nil {
		return []string{fmt.Sprintf("%s: schema %q not found", at, ref)}
	}
	var errs []string
	bad := func(f string, a ...any) { errs = append(errs, at+": "+fmt.Sprintf(f, a...)) }
	typ := sc.Type
	if typ == "" && sc.Properties != nil {
		typ = "object"
	}
	switch typ {
	case "object":
		m, ok := v.(map[string]any)
		if !ok {
			bad("want an object, got %T", v)
			return errs
		}
		for k, pv := range m {
			ps, ok := sc.Properties[k]
			if !ok {
				bad("property %q is not in the spec", k)
				continue
			}
			errs = append(errs, s.validate(ps, pv, at+"."+k)...)
		}
		for _, r := range sc.Required {
			if _, ok := m[r]; !ok {
				bad("required property %q is missing", r)
			}
		}
	case "string":
		str, ok := v.(string)
		if !ok {
			bad("want a string, got %T", v)
			return errs
		}
		if len(sc.Enum) > 0 && !contains(sc.Enum, str) {
			bad("%q is not one of %v", str, sc.Enum)
		}
	case "integer":
		n, ok := v.(float64)
		if !ok || n != math.Trunc(n) {
			bad("want an integer, got %v (%T)", v, v)
			return errs
		}
		if sc.Minimum != nil && n < *sc.Minimum {
			bad("%v is below the minimum %v", n, *sc.Minimum)
		}
		if sc.Maximum != nil && n > *sc.Maximum {
			bad("%v is above the maximum %v", n, *sc.Maximum)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			bad("want a boolean, got %T", v)
		}
	case "array":
		a, ok := v.([]any)
		if !ok {
			bad("want an array, got %T", v)
			return errs
		}
		for i, e := range a {
			errs = append(errs, s.validate(sc.Items, e, fmt.Sprintf("%s[%d]", at, i))...)
		}
	default:
		bad("schema type %q not handled by this checker", typ)
	}
	return errs
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

type recorded struct {
	method, path string
	body         []byte
}

// recordingServer answers every call 204 (or a canned JSON for GETs) and
// remembers it.
func recordingServer(t *testing.T) (*Client, func() []recorded) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []recorded
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, recorded{r.Method, r.URL.Path, b})
		mu.Unlock()
		switch r.URL.Path {
		case "/":
			json.NewEncoder(w).Encode(InstanceInfo{ID: "x", State: "Not started", VMMVersion: "1.14.2", AppName: "Firecracker"})
		case "/version":
			json.NewEncoder(w).Encode(FirecrackerVersion{FirecrackerVersion: "1.14.2"})
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	c := NewClient(sock, 0)
	t.Cleanup(c.Close)
	return c, func() []recorded {
		mu.Lock()
		defer mu.Unlock()
		return append([]recorded(nil), got...)
	}
}

func ptr[T any](v T) *T { return &v }

func fullBucket() *TokenBucket {
	return &TokenBucket{Size: 1 << 20, RefillTime: 100, OneTimeBurst: ptr(int64(1 << 22))}
}

func fullLimiter() *RateLimiter { return &RateLimiter{Bandwidth: fullBucket(), Ops: fullBucket()} }

// Every body the client can send, each with all optional fields set and
// with only the required ones.
var (
	fullLogger  = Logger{LogPath: "/run/vm/firecracker.log", Level: "Debug", ShowLevel: ptr(true), ShowLogOrigin: ptr(false), Module: "api_server::request"}
	fullMachine = MachineConfig{VCPUCount: 32, MemSizeMiB: 1024, SMT: ptr(false), TrackDirtyPages: ptr(true), CPUTemplate: "None", HugePages: "2M"}
	fullBoot    = BootSource{KernelImagePath: "/k/vmlinux", BootArgs: "console=ttyS0", InitrdPath: "/k/initrd"}
	fullDrive   = Drive{DriveID: "root", PathOnHost: "/d/root.ext4", IsRootDevice: true, IsReadOnly: true, PartUUID: "0eaa91a0-01", CacheType: "Writeback", IOEngine: "Async", RateLimiter: fullLimiter()}
	fullNet     = NetworkInterface{IfaceID: "eth0", HostDevName: "tap0", GuestMAC: "06:00:ac:10:00:02", RxRateLimiter: fullLimiter(), TxRateLimiter: fullLimiter()}
	fullVsock   = Vsock{GuestCID: 3, UDSPath: "/run/vm/vsock.sock"}
)

func TestClientRequestsMatchSpec(t *testing.T) {
	spec := loadSpec(t)
	c, calls := recordingServer(t)
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.PutLogger(ctx, fullLogger))
	must(c.PutLogger(ctx, Logger{}))
	must(c.PutMetrics(ctx, Metrics{MetricsPath: "/run/vm/metrics.json"}))
	must(c.PutMachineConfig(ctx, fullMachine))
	must(c.PutMachineConfig(ctx, MachineConfig{VCPUCount: 1, MemSizeMiB: 128}))
	must(c.PutBootSource(ctx, fullBoot))
	must(c.PutBootSource(ctx, BootSource{KernelImagePath: "/k/vmlinux"}))
	must(c.PutDrive(ctx, fullDrive))
	must(c.PutDrive(ctx, Drive{DriveID: "data", PathOnHost: "/d/data.ext4"}))
	must(c.PutNetworkInterface(ctx, fullNet))
	must(c.PutNetworkInterface(ctx, NetworkInterface{IfaceID: "eth0", HostDevName: "tap0"}))
	must(c.PutVsock(ctx, fullVsock))
	must(c.InstanceStart(ctx))
	must(c.SendCtrlAltDel(ctx))
	if _, err := c.InstanceInfo(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Version(ctx); err != nil {
		t.Fatal(err)
	}

	got := calls()
	if len(got) != 16 {
		t.Fatalf("server saw %d calls, want 16", len(got))
	}
	for _, r := range got {
		for _, e := range spec.checkRequest(r.method, r.path, r.body) {
			t.Errorf("%s %s %s: %s", r.method, r.path, r.body, e)
		}
	}
}

// TestFullVariantsSetEveryField makes sure the "full" bodies above really
// carry every field of their type, so a field added later is checked too.
func TestFullVariantsSetEveryField(t *testing.T) {
	for _, v := range []any{fullLogger, fullMachine, fullBoot, fullDrive, fullNet, fullVsock, *fullLimiter(), *fullBucket(), Metrics{MetricsPath: "x"}, InstanceActionInfo{ActionType: ActionInstanceStart}} {
		b, _ := json.Marshal(v)
		var m map[string]any
		json.Unmarshal(b, &m)
		typ := reflect.TypeOf(v)
		for i := 0; i < typ.NumField(); i++ {
			name := strings.Split(typ.Field(i).Tag.Get("json"), ",")[0]
			if _, ok := m[name]; !ok {
				t.Errorf("%s: full variant does not set %q", typ.Name(), name)
			}
		}
	}
}

func TestResponseTypesMatchSpec(t *testing.T) {
	spec := loadSpec(t)
	check := func(method, path, status string, v any) {
		_, op, ok := spec.findOp(method, path)
		if !ok {
			t.Errorf("%s %s not in spec", method, path)
			return
		}
		r, ok := op.Responses[status]
		if !ok || r.Schema == nil {
			t.Errorf("%s %s: no %s response schema", method, path, status)
			return
		}
		b, _ := json.Marshal(v)
		var m any
		json.Unmarshal(b, &m)
		for _, e := range spec.validate(r.Schema, m, path+" answer") {
			t.Error(e)
		}
	}
	check("GET", "/", "200", InstanceInfo{ID: "a", State: "Running", VMMVersion: "1.14.2", AppName: "Firecracker"})
	check("GET", "/version", "200", FirecrackerVersion{FirecrackerVersion: "1.14.2"})
	check("PUT", "/actions", "400", faultBody{FaultMessage: "x"})
}

// TestSpecCheckerCatchesMistakes proves the checker can fail: renamed,
// missing, mistyped and out-of-range fields are all reported.
func TestSpecCheckerCatchesMistakes(t *testing.T) {
	spec := loadSpec(t)
	cases := map[string]struct{ method, path, body string }{
		"renamed field":   {"PUT", "/drives/root", `{"drive_id":"root","is_root":true,"path_on_host":"/x","is_read_only":false}`},
		"missing field":   {"PUT", "/drives/root", `{"drive_id":"root","path_on_host":"/x"}`},
		"wrong type":      {"PUT", "/machine-config", `{"vcpu_count":"2","mem_size_mib":128}`},
		"bad enum":        {"PUT", "/actions", `{"action_type":"Start"}`},
		"below minimum":   {"PUT", "/vsock", `{"guest_cid":2,"uds_path":"/v"}`},
		"above maximum":   {"PUT", "/machine-config", `{"vcpu_count":33,"mem_size_mib":128}`},
		"nested unknown":  {"PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"t","rx_rate_limiter":{"bw":{}}}`},
		"unknown path":    {"PUT", "/drive/root", `{}`},
		"unknown method":  {"DELETE", "/vsock", ``},
		"fraction as int": {"PUT", "/machine-config", `{"vcpu_count":1.5,"mem_size_mib":128}`},
	}
	var names []string
	for n := range cases {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c := cases[n]
		if errs := spec.checkRequest(c.method, c.path, []byte(c.body)); len(errs) == 0 {
			t.Errorf("%s: checker accepted %s %s %s", n, c.method, c.path, c.body)
		}
	}
}

func TestAPIErrorCarriesFault(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"fault_message":"Metrics error: Reinitialization of metrics not allowed."}`)
	}))
	srv.Listener = ln
	srv.Start()
	defer srv.Close()
	c := NewClient(sock, 0)
	defer c.Close()
	err = c.PutMetrics(context.Background(), Metrics{MetricsPath: "/m"})
	var ae *APIError
	if !errors.As(err, &ae) {
		t.Fatalf("error %v is not an APIError", err)
	}
	if ae.Method != "PUT" || ae.Path != "/metrics" || ae.Status != 400 || ae.FaultMessage != "Metrics error: Reinitialization of metrics not allowed." {
		t.Errorf("APIError = %+v", ae)
	}
	want := "firecracker API PUT /metrics: 400 Bad Request: Metrics error: Reinitialization of metrics not allowed."
	if err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
}

func TestClientCallHasDeadline(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	srv.Listener = ln
	srv.Start()
	defer srv.Close()
	defer close(release)
	c := NewClient(sock, 20*time.Millisecond)
	defer c.Close()
	_, err = c.InstanceInfo(context.Background())
	if err == nil || !strings.Contains(err.Error(), "no answer within") {
		t.Fatalf("a hung server gave %v, want a deadline error", err)
	}
}
