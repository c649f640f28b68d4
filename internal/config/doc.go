// Package config finds, reads, validates and explains banger's configuration
// file: a flat TOML file of top-level keys, each with a default. It reports
// every problem with the file, line and key at fault, and can say where each
// effective value came from (default, file or XDG environment variable).
package config
