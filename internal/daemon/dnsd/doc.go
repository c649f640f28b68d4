// Package dnsd is a small DNS responder for the VM bridge. It answers A and
// AAAA queries for NAME.<domain> (for example web.banger or host.banger) from
// a lookup function the daemon supplies, and relays every other query to the
// host's upstream resolvers, over UDP and TCP, with bounded sizes, time and
// concurrency. It knows nothing about the daemon or its store.
package dnsd
