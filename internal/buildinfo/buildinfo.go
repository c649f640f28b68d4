package buildinfo

// Version is set by the Makefile with
// -ldflags "-X banger/internal/buildinfo.Version=<git describe>".
// A plain `go build` or `go test` leaves it as "dev".
var Version = "dev"

// APIVersion is the version of the JSON API that bangerd serves over its Unix
// socket. It changes only when a request or response changes shape in a way
// an older peer cannot read.
const APIVersion = 1
