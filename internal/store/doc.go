// Package store keeps banger's persistent state in one SQLite database file
// under the state directory: it opens the file, checks it (quick_check),
// backs it up before bringing its schema up to date with numbered embedded
// migrations, refuses a file written by a newer banger, ties it to its state
// directory through an id both hold (Bind), notices the file being deleted
// or replaced under it (CheckFile), and reads and writes the rows other
// packages need.
package store
