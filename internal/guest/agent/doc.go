// Package agent is the guest side of the guest-agent protocol: it serves
// requests (exec, copy, port forward, shutdown, time sync, health) arriving
// as streams on a listener or on a multiplexed byte stream, and keeps a
// transport open for the guest's whole life (ServeVsock, ServeSerial,
// reopening what fails). Booting the guest (kernel parameters, network, SSH
// keys) is someone else's job; internal/guest/agentcmd, the
// banger-vsock-agent program, wires both together.
package agent
