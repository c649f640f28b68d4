package config_test

import (
	"strings"
	"testing"

	"banger/internal/config"
)

func TestParseSize(t *testing.T) {
	const (
		kib = 1 << 10
		mib = 1 << 20
		gib = 1 << 30
		tib = 1 << 40
	)
	good := []struct {
		in   string
		want config.Size
	}{
		{"2GiB", 2 * gib},
		{"512MiB", 512 * mib},
		{"1024KiB", 1024 * kib},
		{"1TiB", tib},
		{"2G", 2 * gib},
		{"512M", 512 * mib},
		{"1K", kib},
		{"1T", tib},
		{"4096", 4096},
		{"1", 1},
		{"100B", 100},
		{"2gib", 2 * gib},
		{"2 GiB", 2 * gib},
		{"  8G ", 8 * gib},
		{"+3M", 3 * mib},
		{"8388607TiB", 8388607 * tib},
		{"9223372036854775807", 1<<63 - 1},
	}
	for _, tc := range good {
		got, err := config.ParseSize(tc.in)
		if err != nil {
			t.Errorf("ParseSize(%q): unexpected error %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseSize(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}

	bad := []struct {
		in, wantMsg string
	}{
		{"", "empty"},
		{"   ", "empty"},
		{"0", "zero"},
		{"0GiB", "zero"},
		{"-1G", "negative"},
		{"-5", "negative"},
		{"1.5GiB", "here 1536MiB"},
		{"0.5K", "here 512"},
		{"1.3", "fractional"},
		{"2GB", "write 2GiB"},
		{"2mb", "write 2MiB"},
		{"2X", `unknown unit "X"`},
		{"2PiB", `unknown unit "PiB"`},
		{"GiB", "does not start with a number"},
		{"1..2G", "not a number"},
		{"1-2G", "not a number"},
		{"+", "not a number"},
		{"8388608TiB", "too large"},
		{"9223372036854775808", "too large"},
		{"99999999999999999999999G", "too large"},
	}
	for _, tc := range bad {
		got, err := config.ParseSize(tc.in)
		if err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", tc.in, got)
			continue
		}
		if !strings.Contains(err.Error(), tc.wantMsg) {
			t.Errorf("ParseSize(%q) error %q does not mention %q", tc.in, err, tc.wantMsg)
		}
		if !strings.Contains(err.Error(), `"`+tc.in+`"`) {
			t.Errorf("ParseSize(%q) error %q does not quote the input", tc.in, err)
		}
	}
}

func TestSizeString(t *testing.T) {
	cases := []struct {
		in   config.Size
		want string
	}{
		{2 << 30, "2GiB"},
		{1536 << 20, "1536MiB"},
		{1 << 40, "1TiB"},
		{1025 << 30, "1025GiB"},
		{1024 << 40, "1024TiB"},
		{3 << 10, "3KiB"},
		{1000, "1000"},
		{1, "1"},
		{0, "0"},
		{-2048, "-2048"},
		{1<<20 + 1, "1048577"},
	}
	for _, tc := range cases {
		if got := tc.in.String(); got != tc.want {
			t.Errorf("Size(%d).String() = %q, want %q", int64(tc.in), got, tc.want)
		}
	}
}

func TestSizeText(t *testing.T) {
	var s config.Size
	if err := s.UnmarshalText([]byte("3GiB")); err != nil || s != 3<<30 {
		t.Fatalf("UnmarshalText(3GiB) = %d, %v", s, err)
	}
	if err := s.UnmarshalText([]byte("3GB")); err == nil {
		t.Fatal("UnmarshalText(3GB) succeeded, want an error")
	}
	if s != 3<<30 {
		t.Fatalf("failed UnmarshalText changed the value to %d", s)
	}
	b, err := s.MarshalText()
	if err != nil || string(b) != "3GiB" {
		t.Fatalf("MarshalText = %q, %v", b, err)
	}
}

func FuzzParseSize(f *testing.F) {
	for _, seed := range []string{
		"2GiB", "512MiB", "1024KiB", "1TiB", "2G", "512M", "1K", "1T", "4096",
		"0", "-1G", "1.5GiB", "2GB", "", "9223372036854775807", "8388608TiB",
		"+1k", " 7 m ", "1.", ".5G", "1e3", "0x10",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := config.ParseSize(in)
		if err != nil {
			if s != 0 {
				t.Fatalf("ParseSize(%q) returned %d with error %v", in, s, err)
			}
			return
		}
		if s <= 0 {
			t.Fatalf("ParseSize(%q) = %d, want a positive size", in, s)
		}
		back, err := config.ParseSize(s.String())
		if err != nil {
			t.Fatalf("ParseSize(%q) = %d, but its String() %q does not parse: %v", in, s, s.String(), err)
		}
		if back != s {
			t.Fatalf("ParseSize(%q) = %d, String() = %q parses back to %d", in, s, s.String(), back)
		}
	})
}
