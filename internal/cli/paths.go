package cli

import (
	"net/url"
	"strings"
)

// pathSegment is name as one segment of an API path. url.PathEscape
// leaves "." and ".." as they are, and the daemon's router cleans them
// away: `snapshot rm ..` became DELETE /v1 ("no endpoint: the CLI may be
// newer than the daemon") and `snapshot inspect .` read the whole list.
// Escaped, they reach the daemon as names, which it reports not found.
// Every name or id the CLI puts in an API path goes through here.
func pathSegment(name string) string {
	if name == "." || name == ".." {
		return strings.Repeat("%2E", len(name))
	}
	return url.PathEscape(name)
}
