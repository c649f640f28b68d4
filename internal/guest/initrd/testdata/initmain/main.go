// Command initmain is a minimal /init for tests: it calls initrd.Run.
package main

import (
	"fmt"
	"os"

	"banger/internal/guest/initrd"
)

func main() {
	if err := initrd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
