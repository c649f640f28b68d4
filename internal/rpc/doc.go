// Package rpc is the wire contract between the banger CLI and bangerd: the
// JSON types of the versioned API, the HTTP-over-Unix-socket client, and the
// small server helpers that enforce the API version and shape errors.
//
// Nothing here knows how the daemon does its work; internal/daemon implements
// the endpoints and internal/cli calls them.
package rpc
