package fcproc

import (
	"os"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseProcStat(t *testing.T) {
	// A command name with spaces and parentheses must not shift the fields.
	line := "4242 (fire cracker) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 987654 12345 67 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
	st, err := parseProcStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if st.State != 'S' || st.StartTime != 987654 {
		t.Errorf("got state %q start %d, want S 987654", st.State, st.StartTime)
	}
	for _, bad := range []string{"", "4242 fc S 1", "4242 (fc) S 1 2 3", "4242 (fc) SS " + strings.Repeat("1 ", 30), "4242 (fc) S" + strings.Repeat(" 1", 18) + " x 1 1"} {
		if _, err := parseProcStat([]byte(bad)); err == nil {
			t.Errorf("parseProcStat(%q) accepted it", bad)
		}
	}
}

func TestReadProcStatOfSelf(t *testing.T) {
	st, err := readProcStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.StartTime == 0 || !processAlive(os.Getpid(), st.StartTime) {
		t.Errorf("own process: %+v not alive", st)
	}
	if processAlive(os.Getpid(), st.StartTime+1) {
		t.Error("a different start time counts as the same process")
	}
	args, err := readCmdline(os.Getpid())
	if err != nil || len(args) == 0 {
		t.Errorf("cmdline %v, %v", args, err)
	}
}

func TestCmdlineHasAPISock(t *testing.T) {
	sock := "/run/vm/fc.sock"
	yes := [][]string{
		{"firecracker", "--api-sock", sock, "--id", "a"},
		{"firecracker", "--api-sock=" + sock},
	}
	no := [][]string{
		nil,
		{"firecracker", "--api-sock"},
		{"firecracker", "--api-sock", "/run/vm/fc.sock2"},
		{"firecracker", sock},
		{"firecracker", "--id", "--api-sock", "--x", sock},
	}
	for _, a := range yes {
		if !cmdlineHasAPISock(a, sock) {
			t.Errorf("%q: not recognised", a)
		}
	}
	for _, a := range no {
		if cmdlineHasAPISock(a, sock) {
			t.Errorf("%q: wrongly recognised", a)
		}
	}
}

func TestParseFault(t *testing.T) {
	cases := map[string]string{
		`{"fault_message":"a \\\nb"}`:           "a b",
		`{"fault_message":"x"}`:                 "x",
		"not json\n at all":                     "not json at all",
		`{"other":1}`:                           `{"other":1}`,
		`{"fault_message":"tabs\tand  spaces"}`: "tabs and spaces",
	}
	for in, want := range cases {
		if got := parseFault([]byte(in)); got != want {
			t.Errorf("parseFault(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzParseProcStat(f *testing.F) {
	if data, err := os.ReadFile("/proc/self/stat"); err == nil {
		f.Add(data)
	}
	f.Add([]byte("1 (a) S 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55 0 0"))
	f.Add([]byte("1 ((()) ) Z" + strings.Repeat(" 9", 40)))
	f.Add([]byte(")("))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := parseProcStat(data)
		if err != nil {
			return
		}
		if st.State == 0 && !strings.Contains(string(data), "\x00") {
			t.Errorf("accepted %q with an empty state", data)
		}
	})
}

func FuzzParseFault(f *testing.F) {
	f.Add([]byte(`{"fault_message":"Start microvm error: Kvm error: x \\\ny"}`))
	f.Add([]byte(`{"fault_message":""}`))
	f.Add([]byte("\xff\xfe"))
	f.Add([]byte(strings.Repeat("é", 3000)))
	f.Fuzz(func(t *testing.T, data []byte) {
		msg := parseFault(data)
		if strings.ContainsAny(msg, "\n\r") {
			t.Errorf("fault %q kept a line break", msg)
		}
		if len(msg) > 2000+len("…") {
			t.Errorf("fault is %d bytes long", len(msg))
		}
		if utf8.Valid(data) && !utf8.ValidString(msg) {
			t.Errorf("valid input became invalid UTF-8: %q", msg)
		}
	})
}
