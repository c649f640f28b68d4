package progress

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestUnitSet(t *testing.T) {
	for _, u := range []Unit{None, Bytes, Items} {
		if !u.Valid() {
			t.Errorf("%q: not valid", u)
		}
		if got, err := ParseUnit(string(u)); err != nil || got != u {
			t.Errorf("ParseUnit(%q) = %q, %v", u, got, err)
		}
	}
	for _, s := range []string{"kg", "Bytes", "packages", " bytes"} {
		if Unit(s).Valid() {
			t.Errorf("%q: valid", s)
		}
		if _, err := ParseUnit(s); err == nil || !strings.Contains(err.Error(), s) {
			t.Errorf("ParseUnit(%q): error %v, want one naming it", s, err)
		}
	}
}

func TestUnitJSONRefusesUnknown(t *testing.T) {
	var v struct {
		Unit Unit `json:"unit"`
	}
	if err := json.Unmarshal([]byte(`{"unit":"bytes"}`), &v); err != nil || v.Unit != Bytes {
		t.Fatalf("bytes: %q, %v", v.Unit, err)
	}
	if err := json.Unmarshal([]byte(`{"unit":"kg"}`), &v); err == nil {
		t.Fatal("unit kg decoded without error")
	}
	if err := json.Unmarshal([]byte(`{"unit":3}`), &v); err == nil {
		t.Fatal("numeric unit decoded without error")
	}
	b, err := json.Marshal(struct {
		Unit Unit `json:"unit"`
	}{Items})
	if err != nil || string(b) != `{"unit":"items"}` {
		t.Fatalf("marshal: %s, %v", b, err)
	}
}
