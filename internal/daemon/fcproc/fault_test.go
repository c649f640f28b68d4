package fcproc

import (
	"strings"
	"testing"
	"unicode/utf8"
)

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
