// Package store keeps banger's persistent state in one SQLite database file
// under the state directory: it opens the file, brings its schema up to date
// with numbered embedded migrations, refuses a file written by a newer banger,
// and reads and writes the rows other packages need.
package store
