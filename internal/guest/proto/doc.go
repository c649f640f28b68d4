// Package proto defines the wire format spoken between the host and
// banger-vsock-agent: length-prefixed frames with a hard size limit, the
// hello that opens every stream, and the messages of each request. It has no
// I/O policy of its own; the agent and the client build on it.
//
// docs/guest-agent.md describes the same format in prose.
package proto
