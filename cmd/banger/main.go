// Command banger is the banger CLI: it runs and manages disposable microVMs
// through the bangerd daemon, which it starts when needed.
package main

import (
	"os"

	"banger/internal/cli"
)

func main() {
	os.Exit(cli.Main())
}
