// Package agenttest runs a real guest agent (internal/guest/agent) on a Unix
// socket for host-side tests: the client, the CLI's copy and exec paths and
// the daemon's guest calls talk to it as they would to a guest. It is
// imported by tests only.
package agenttest
