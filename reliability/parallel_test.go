//go:build reliability

package reliability

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestParallelCreatesAndRemoves runs fifty `vm create` at once, then fifty
// `vm rm` at once: every one must succeed, every name must be distinct,
// and nothing may be left afterwards.
func TestParallelCreatesAndRemoves(t *testing.T) {
	e := start(t)
	const n = 50
	run := func(args func(i int) []string) []string {
		var wg sync.WaitGroup
		errs := make([]string, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if out, code := e.CLI(args(i)...); code != 0 {
					errs[i] = fmt.Sprintf("%v: %s", args(i), firstLine(out))
				}
			}()
		}
		wg.Wait()
		var failed []string
		for _, s := range errs {
			if s != "" {
				failed = append(failed, s)
			}
		}
		return failed
	}
	failed := run(func(i int) []string {
		return []string{"-q", "vm", "create", "img", "--name", fmt.Sprintf("par-%02d", i)}
	})
	var vms []struct{ Name, ID, State string }
	json.Unmarshal([]byte(e.Must(t, "vm", "ls", "-o", "json")), &vms)
	count := 0
	for _, v := range vms {
		if strings.HasPrefix(v.Name, "par-") {
			count++
			if _, err := os.Stat(filepath.Join(e.State, "vms", v.ID)); err != nil {
				failed = append(failed, v.Name+" has no directory")
			}
		}
	}
	if count != n {
		failed = append(failed, fmt.Sprintf("%d VMs listed, want %d", count, n))
	}
	failed = append(failed, run(func(i int) []string { return []string{"vm", "rm", fmt.Sprintf("par-%02d", i)} })...)
	waitTrashGone(e)
	out := e.Must(t, "vm", "ls")
	if strings.Contains(out, "par-") {
		failed = append(failed, "VMs left after rm: "+out)
	}
	ents, _ := os.ReadDir(filepath.Join(e.State, "vms"))
	if len(ents) > 0 {
		var names []string
		for _, ent := range ents {
			names = append(names, ent.Name())
		}
		failed = append(failed, fmt.Sprintf("directories left: %v", names))
	}
	saw := fmt.Sprintf("%d creates and %d removals succeeded", n, n)
	if len(failed) > 0 {
		saw = strings.Join(failed, "; ")
	}
	record(t, result{area: "concurrency", fault: "50 parallel vm create, then 50 parallel vm rm", survived: len(failed) == 0, saw: saw})
}
