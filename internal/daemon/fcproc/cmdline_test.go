package fcproc

import "testing"

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
