package config

import (
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// Size is an amount of bytes, written in the config file as "2GiB", "512M",
// or a bare integer of bytes. All unit suffixes are binary (powers of 1024).
type Size int64

// Binary units, largest first.
var sizeUnits = []struct {
	suffix string
	bytes  int64
}{
	{"TiB", 1 << 40},
	{"GiB", 1 << 30},
	{"MiB", 1 << 20},
	{"KiB", 1 << 10},
}

// unitFor maps an accepted suffix (compared case-insensitively) to its multiple.
func unitFor(suffix string) (int64, bool) {
	switch strings.ToLower(suffix) {
	case "", "b":
		return 1, true
	case "k", "kib":
		return 1 << 10, true
	case "m", "mib":
		return 1 << 20, true
	case "g", "gib":
		return 1 << 30, true
	case "t", "tib":
		return 1 << 40, true
	}
	return 0, false
}

// ParseSize parses a positive whole number of bytes with an optional binary
// suffix: KiB, MiB, GiB, TiB, their short forms K, M, G, T, or B for bytes.
// Suffixes are case-insensitive and may be separated from the number by
// spaces. Zero, negative, fractional and decimal-unit (GB, MB) sizes are
// rejected with a message saying what to write instead.
func ParseSize(s string) (Size, error) {
	v, reason := parseSize(s)
	if reason != "" {
		return 0, fmt.Errorf("invalid size %q: %s", s, reason)
	}
	return v, nil
}

// parseSize does the work of ParseSize; on failure it returns a reason that
// reads well after "is not allowed: " or "invalid size: ".
func parseSize(s string) (Size, string) {
	in := strings.TrimSpace(s)
	if in == "" {
		return 0, "it is empty: write a whole number with a unit, e.g. 2GiB or 512MiB"
	}
	i := 0
	for i < len(in) && (in[i] >= '0' && in[i] <= '9' || in[i] == '.' || in[i] == '-' || in[i] == '+') {
		i++
	}
	num, suffix := in[:i], strings.TrimSpace(in[i:])
	if num == "" {
		return 0, "it does not start with a number: write a whole number with a unit, e.g. 2GiB or 512MiB"
	}
	mult, ok := unitFor(suffix)
	if !ok {
		switch strings.ToLower(suffix) {
		case "kb", "mb", "gb", "tb":
			up := strings.ToUpper(suffix[:1])
			return 0, fmt.Sprintf("%s is a decimal unit and banger sizes are binary: write %s%siB", suffix, num, up)
		}
		return 0, fmt.Sprintf("unknown unit %q: use KiB, MiB, GiB, TiB (or K, M, G, T), or no unit for bytes", suffix)
	}
	if strings.HasPrefix(num, "-") {
		return 0, "it is negative: sizes must be greater than zero"
	}
	num = strings.TrimPrefix(num, "+")
	if num == "" || strings.ContainsAny(num, "+-") || strings.Count(num, ".") > 1 || num == "." {
		return 0, "it is not a number: write a whole number with a unit, e.g. 2GiB or 512MiB"
	}
	if strings.Contains(num, ".") {
		return 0, fractionalReason(num, mult)
	}
	tooLarge := "it is too large: the maximum is " + Size(math.MaxInt64).String() + " bytes"
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		return 0, tooLarge
	}
	if n == 0 {
		return 0, "it is zero: sizes must be greater than zero"
	}
	if n > math.MaxInt64/mult {
		return 0, tooLarge
	}
	return Size(n * mult), ""
}

// fractionalReason explains that fractions are not accepted and, when the
// value is a whole number of bytes, suggests how to write it.
func fractionalReason(num string, mult int64) string {
	r, ok := new(big.Rat).SetString(num)
	if ok {
		r.Mul(r, new(big.Rat).SetInt64(mult))
		if r.IsInt() && r.Num().IsInt64() && r.Num().Int64() > 0 {
			return "it is fractional: write a whole number of a smaller unit, here " + Size(r.Num().Int64()).String()
		}
	}
	return "it is fractional: write a whole number of a smaller unit, e.g. 1536MiB instead of 1.5GiB"
}

// String renders the size in the largest binary unit that divides it
// exactly ("2GiB", "1536MiB"), or as a bare number of bytes.
func (s Size) String() string {
	if s > 0 {
		for _, u := range sizeUnits {
			if int64(s)%u.bytes == 0 {
				return strconv.FormatInt(int64(s)/u.bytes, 10) + u.suffix
			}
		}
	}
	return strconv.FormatInt(int64(s), 10)
}

// MarshalText renders the size as String does, so JSON and TOML output
// shows "2GiB" rather than a byte count.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses the size as ParseSize does.
func (s *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}
