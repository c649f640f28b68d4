// Package cli is the banger command line: the cobra command tree, output
// formats, exit codes, following operations with progress, and starting
// bangerd on demand. It talks to the daemon only through internal/rpc.
package cli
