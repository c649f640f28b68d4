// Command snapinit is the init of qemuproc's snapshot test: it fills some
// memory with a pattern, then prints a counter on the console every 50 ms
// with whether the pattern is intact, so that a guest restored from a
// saved state shows it went on from where it was saved.
package main

import (
	"fmt"
	"os"
	"time"
)

// fill is how much memory the guest dirties, so that the saved state holds
// more than a freshly booted kernel.
const fill = 64 << 20

func main() {
	buf := make([]byte, fill)
	for i := range buf {
		buf[i] = byte(i*7 + i>>12)
	}
	for n := 1; ; n++ {
		ok := buf[n%fill] == byte((n%fill)*7+(n%fill)>>12)
		fmt.Fprintf(os.Stdout, "TICK %d intact=%v\n", n, ok)
		time.Sleep(50 * time.Millisecond)
	}
}
