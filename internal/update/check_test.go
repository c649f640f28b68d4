package update

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestDirection(t *testing.T) {
	var already *AlreadyError
	if err := Direction("v0.2.0", "v0.2.0", true, 0, false); !errors.As(err, &already) || err.Error() != "already at v0.2.0" {
		t.Errorf("same version: %v", err)
	}
	if err := Direction("v0.2.0", "v0.1.0", true, -1, false); err == nil || !strings.Contains(err.Error(), "add --allow-downgrade") {
		t.Errorf("downgrade: %v", err)
	}
	if err := Direction("v0.2.0", "v0.1.0", true, -1, true); err != nil {
		t.Errorf("allowed downgrade: %v", err)
	}
	if err := Direction("v0.2.0", "v0.3.0", true, 1, false); err != nil {
		t.Errorf("upgrade: %v", err)
	}
	if err := Direction("dev", "v0.3.0", false, 0, false); err != nil {
		t.Errorf("from a dev build: %v", err)
	}
}

func TestUnitsChanged(t *testing.T) {
	names := []string{"bangerd.service", "banger-helper.service"}
	old := map[string][]byte{"bangerd.service": []byte("a"), "banger-helper.service": []byte("h")}
	same := map[string][]byte{"bangerd.service": []byte("a"), "banger-helper.service": []byte("h")}
	if got := UnitsChanged(names, old, same); len(got) != 0 {
		t.Errorf("same units: %q", got)
	}
	changed := map[string][]byte{"bangerd.service": []byte("a"), "banger-helper.service": []byte("h2")}
	if got := UnitsChanged(names, old, changed); !reflect.DeepEqual(got, []string{"banger-helper.service"}) {
		t.Errorf("changed helper: %q", got)
	}
	if got := UnitsChanged(names, old, map[string][]byte{"bangerd.service": []byte("a")}); !reflect.DeepEqual(got, []string{"banger-helper.service"}) {
		t.Errorf("missing helper: %q", got)
	}
	hint := UnitsHint("https://rel.example.test/", "v0.3.0", "/usr/local", []string{"banger-helper.service"})
	for _, want := range []string{"curl -fsSL https://rel.example.test/install.sh | sh -s -- --version v0.3.0 --prefix /usr/local", "sudo systemctl daemon-reload && sudo systemctl restart banger-helper"} {
		if !strings.Contains(hint, want) {
			t.Errorf("hint %q lacks %q", hint, want)
		}
	}
	if UnitsHint("x", "v1.0.0", "", nil) != "" {
		t.Error("a hint with nothing changed")
	}
}
