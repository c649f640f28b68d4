package release

import (
	"slices"
	"strings"
	"testing"
)

func TestParseVersion(t *testing.T) {
	good := map[string]Version{
		"v0.0.1":                     {0, 0, 1, ""},
		"v0.3.1":                     {0, 3, 1, ""},
		"v10.20.30":                  {10, 20, 30, ""},
		"v1.2.3-rc.1":                {1, 2, 3, "rc.1"},
		"v1.0.0-alpha":               {1, 0, 0, "alpha"},
		"v1.0.0-0.3.7":               {1, 0, 0, "0.3.7"},
		"v1.0.0-x.7.z.92":            {1, 0, 0, "x.7.z.92"},
		"v1.0.0-x-y-z.--":            {1, 0, 0, "x-y-z.--"},
		"v999999999.0.0":             {999999999, 0, 0, ""},
		"v1.0.0-alpha.beta.0a":       {1, 0, 0, "alpha.beta.0a"},
		"v1.0.0-" + rep("a", 57):     {1, 0, 0, rep("a", 57)},
		"v0.0.0":                     {0, 0, 0, ""},
		"v2.0.0-rc-1":                {2, 0, 0, "rc-1"},
		"v1.0.0-alpha-a.b-c-somethi": {1, 0, 0, "alpha-a.b-c-somethi"},
	}
	for s, want := range good {
		v, err := ParseVersion(s)
		if err != nil || v != want {
			t.Errorf("ParseVersion(%q) = %+v, %v; want %+v", s, v, err, want)
			continue
		}
		if v.String() != s {
			t.Errorf("%q: String() = %q", s, v.String())
		}
	}
	bad := map[string]string{
		"dev":                    "development build",
		"":                       "development build",
		"v1.2":                   "three numbers",
		"1.2.3":                  "leading v",
		"V1.2.3":                 "leading v",
		"v1.2.3-3-gabcdef-dirty": "git describe",
		"v1.2.3-3-gabcdef1":      "git describe",
		"v1.2.3-dirty":           "git describe",
		"v1.2.3+build.1":         "build metadata",
		"v01.2.3":                "leading zero",
		"v1.02.3":                "leading zero",
		"v1.2.03":                "leading zero",
		"v1.2.3-01":              "leading zero",
		"v1.2.3-rc..1":           "empty identifier",
		"v1.2.3-":                "empty identifier",
		"v1.2.3-rc.1.":           "empty identifier",
		"v1.2.3-rc_1":            "outside",
		"v1.2.3-é":               "outside",
		"v1.2.3.4":               "three numbers",
		"v1..3":                  "empty",
		"v-1.2.3":                "three numbers",
		"v1.2.x":                 "not a number",
		"v1.2.+3":                "build metadata",
		"v1234567890.0.0":        "digits",
		" v1.2.3":                "leading v",
		"v1.2.3 ":                "not a number",
		"v1.2.3\n":               "not a number",
		"v1.0.0-" + rep("a", 58): "longer than 64",
	}
	for s, why := range bad {
		_, err := ParseVersion(s)
		if err == nil || !strings.Contains(err.Error(), why) || !strings.Contains(err.Error(), "not a release version") {
			t.Errorf("ParseVersion(%q) = %v, want an error saying %q", s, err, why)
		}
	}
}

func rep(s string, n int) string { return strings.Repeat(s, n) }

// The order semver 2.0 gives as its example, and a few more.
func TestCompare(t *testing.T) {
	order := []string{
		"v0.0.1", "v0.1.0", "v0.9.9", "v0.10.0",
		"v1.0.0-0", "v1.0.0-2", "v1.0.0-10", "v1.0.0-alpha", "v1.0.0-alpha.1", "v1.0.0-alpha.beta",
		"v1.0.0-beta", "v1.0.0-beta.2", "v1.0.0-beta.11", "v1.0.0-rc.1", "v1.0.0",
		"v1.0.1", "v1.1.0", "v2.0.0", "v10.0.0",
	}
	vs := make([]Version, len(order))
	for i, s := range order {
		v, err := ParseVersion(s)
		if err != nil {
			t.Fatal(err)
		}
		vs[i] = v
	}
	for i := range vs {
		for j := range vs {
			want := cmpInt(i, j)
			if got := vs[i].Compare(vs[j]); got != want {
				t.Errorf("%s.Compare(%s) = %d, want %d", vs[i], vs[j], got, want)
			}
		}
	}
	shuffled := slices.Clone(vs)
	slices.Reverse(shuffled)
	slices.SortFunc(shuffled, Version.Compare)
	if !slices.Equal(shuffled, vs) {
		t.Errorf("sorted: %v", shuffled)
	}
}

func FuzzParseVersion(f *testing.F) {
	for _, s := range []string{"v0.3.1", "v1.2.3-rc.1", "dev", "v1.2.3-3-gabcdef-dirty", "v01.2.3", "v1.0.0-0.3.7", "v1.2.3+x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseVersion(s)
		if err != nil {
			return
		}
		if v.String() != s {
			t.Fatalf("ParseVersion(%q).String() = %q", s, v.String())
		}
		w, err := ParseVersion(v.String())
		if err != nil || w != v || v.Compare(w) != 0 {
			t.Fatalf("round trip of %q: %+v, %v", s, w, err)
		}
		if len(s) > MaxVersionLen {
			t.Fatalf("%q longer than the bound parsed", s)
		}
	})
}
