// Package privhelper is the one narrow door to root for a bangerd that runs
// as a user: a small daemon (`bangerd helper`) on /run/banger/helper.sock
// that authenticates each caller by SO_PEERCRED against the users allowed
// in its config, accepts only typed requests on banger's own objects
// (interfaces with banger's prefixes, paths under the caller's state dir
// with symlinks resolved, subnets inside the configured range), and hands
// them to an Executor. There is no "run this command" request, by design.
package privhelper
