package release

import "io"

// Extract reads a release archive (gzip'd tar) from r into dir, an empty
// private directory, and returns the path of each entry by name. Only the
// names of ArchiveFiles are accepted, each once, as regular files within
// size bounds; every one must be present. The binaries get mode 0755, the
// rest 0644, whatever the archive says.
func Extract(r io.Reader, dir string) (map[string]string, error) { panic("skeleton") }
