// Package agent is the guest side of the guest-agent protocol: it serves
// requests (exec, copy, port forward, shutdown, time sync, health) arriving
// as streams on a listener or on a multiplexed byte stream. Booting the guest
// (kernel parameters, network, SSH keys) is someone else's job; the
// banger-vsock-agent binary wires both together.
package agent
