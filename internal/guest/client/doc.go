// Package client is the host side of the guest-agent protocol: it opens
// streams to banger-vsock-agent (Firecracker hybrid vsock, a multiplexed
// serial byte stream, or any net.Conn) and runs requests on them: exec,
// copies, port forwards, shutdown, reboot, time sync, health and the
// "resumed" request that gives a VM restored from a snapshot its own
// identity.
package client
