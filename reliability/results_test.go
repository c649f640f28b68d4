//go:build reliability

package reliability

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
)

// result is one row of the suite's table.
type result struct {
	area, fault string
	survived    bool
	saw         string // what the user was told, first line
	lost        string // data lost: "none" is the goal
}

var (
	resMu   sync.Mutex
	results []result
)

// record adds a row and fails the test when banger did not survive or
// lost data.
func record(t *testing.T, r result) {
	t.Helper()
	r.saw = said(r.saw)
	if r.lost == "" {
		r.lost = "none"
	}
	resMu.Lock()
	results = append(results, r)
	resMu.Unlock()
	t.Logf("%s | %s | survived=%v | saw: %s | lost: %s", r.area, r.fault, r.survived, r.saw, r.lost)
	if !r.survived || r.lost != "none" {
		t.Errorf("%s: %s: survived=%v, data lost: %s (user saw: %s)", r.area, r.fault, r.survived, r.lost, r.saw)
	}
}

// said is what the user was told: the CLI's error line when there is one,
// else the last line of the output.
func said(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for _, l := range lines {
		if strings.HasPrefix(l, "banger: ") {
			return firstLine(l)
		}
	}
	return firstLine(lines[len(lines)-1])
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			if len(l) > 160 {
				l = l[:157] + "..."
			}
			return strings.ReplaceAll(l, "|", "/")
		}
	}
	return "(nothing)"
}

// writeResults writes the table to build/reliability/results.md at the
// top of the checkout.
func writeResults() {
	resMu.Lock()
	defer resMu.Unlock()
	if len(results) == 0 {
		return
	}
	sort.SliceStable(results, func(i, j int) bool { return results[i].area < results[j].area })
	var b strings.Builder
	b.WriteString("| area | fault | survived | what the user saw | data lost |\n| --- | --- | --- | --- | --- |\n")
	for _, r := range results {
		yes := "yes"
		if !r.survived {
			yes = "**no**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", r.area, r.fault, yes, r.saw, r.lost)
	}
	dir := filepath.Join("..", "build", "reliability")
	if err := os.MkdirAll(dir, 0o755); err == nil {
		_ = os.WriteFile(filepath.Join(dir, "results.md"), []byte(b.String()), 0o644)
	}
	fmt.Print("\n" + b.String())
}
