// Package guest is the home of everything that talks to or runs inside a
// guest VM: the wire protocol (proto), the in-guest agent (agent), the host
// side client (client), tar helpers shared by both (tarx) and the initrd
// builder (initrd). It holds no code of its own.
package guest
