package procwatch

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

func TestParseStat(t *testing.T) {
	tail := " 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 987654 12345 67 18446744073709551615 0 0\n"
	cases := []struct {
		line string
		want Stat
	}{
		// A command name with spaces and parentheses must not shift the fields.
		{"4242 (fire cracker) (x)) S" + tail, Stat{PID: 4242, Comm: "fire cracker) (x)", State: 'S', PPID: 1, StartTime: 987654}},
		{"7 (qemu-system-x86) Z" + tail, Stat{PID: 7, Comm: "qemu-system-x86", State: 'Z', PPID: 1, StartTime: 987654}},
		{"7 () R" + tail, Stat{PID: 7, Comm: "", State: 'R', PPID: 1, StartTime: 987654}},
		{"9 (a)b) D" + tail, Stat{PID: 9, Comm: "a)b", State: 'D', PPID: 1, StartTime: 987654}},
	}
	for _, c := range cases {
		got, err := ParseStat([]byte(c.line))
		if err != nil || got != c.want {
			t.Errorf("ParseStat(%q) = %+v, %v; want %+v", c.line, got, err, c.want)
		}
	}
	bad := []string{
		"",
		"4242 fc S 1",
		"4242 (fc) S 1 2 3",
		"4242 (fc) SS " + strings.Repeat("1 ", 30),
		"4242 (fc) S" + strings.Repeat(" 1", 18) + " x 1 1",
		"x (fc) S" + strings.Repeat(" 1", 25),
		"-3 (fc) S" + strings.Repeat(" 1", 25),
		"4242 (fc) S y" + strings.Repeat(" 1", 25),
		")( S" + strings.Repeat(" 1", 25),
	}
	for _, b := range bad {
		if st, err := ParseStat([]byte(b)); err == nil {
			t.Errorf("ParseStat(%q) accepted it: %+v", b, st)
		}
	}
}

func TestStatExited(t *testing.T) {
	for _, s := range "ZXx" {
		if !(Stat{State: byte(s)}).Exited() {
			t.Errorf("state %c does not count as exited", s)
		}
	}
	for _, s := range "RSDTtIWP" {
		if (Stat{State: byte(s)}).Exited() {
			t.Errorf("state %c counts as exited", s)
		}
	}
}

func TestReadStatOfSelf(t *testing.T) {
	st, err := ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.PID != os.Getpid() || st.PPID != os.Getppid() || st.StartTime == 0 || st.Exited() {
		t.Errorf("own stat %+v (pid %d, ppid %d)", st, os.Getpid(), os.Getppid())
	}
	if !Alive(os.Getpid(), st.StartTime) || !Running(os.Getpid()) {
		t.Error("this process is not alive")
	}
	if Alive(os.Getpid(), st.StartTime+1) {
		t.Error("a different start time counts as the same process")
	}
	// The highest pid Linux allows is 2^22; one above it never exists.
	if _, err := ReadStat(1<<22 + 1); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ReadStat of a pid that cannot exist: %v, want not exist", err)
	}
	if Running(1<<22 + 1) {
		t.Error("a pid that cannot exist runs")
	}
}

// formatStat is the line the kernel would write for s.
func formatStat(s Stat) string {
	return fmt.Sprintf("%d (%s) %s %d 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 %d 0 0\n", s.PID, s.Comm, string([]byte{s.State}), s.PPID, s.StartTime)
}

func FuzzParseStat(f *testing.F) {
	if data, err := os.ReadFile("/proc/self/stat"); err == nil {
		f.Add(data)
	}
	f.Add([]byte("1 (a) S 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55 0 0"))
	f.Add([]byte("1 ((()) ) Z" + strings.Repeat(" 9", 40)))
	f.Add([]byte("12 (a b (c)) R 1" + strings.Repeat(" 3", 30)))
	f.Add([]byte(")("))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := ParseStat(data)
		if err != nil {
			return
		}
		if st.PID <= 0 {
			t.Errorf("accepted %q with pid %d", data, st.PID)
		}
		if st.State == ' ' || st.State == '\n' {
			t.Errorf("accepted %q with a blank state", data)
		}
		// What was parsed, written out the kernel's way, parses the same.
		again, err := ParseStat([]byte(formatStat(st)))
		if err != nil || again != st {
			t.Errorf("round trip of %+v: %+v, %v", st, again, err)
		}
	})
}
