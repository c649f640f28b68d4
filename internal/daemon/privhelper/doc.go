// Package privhelper is the wire protocol of `bangerd helper` and its
// client: the request and answer types, their strict decoder, the names
// both sides share (socket, operations, error codes, snapshot prefix), and
// Client, the privops.Ops of a bangerd that runs as a user. It imports
// nothing that does privileged work (no netlink, nftables or
// device-mapper code), so that the banger CLI (`doctor`) and bangerd link
// only this much of the helper; privhelperd is the server side.
package privhelper
