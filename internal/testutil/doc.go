// Package testutil holds what many packages' tests check about the host
// before they run: root, a device or file they need. Each helper skips the
// test, saying what it needs and why, rather than failing on a host that
// lacks it. It is imported by tests only; the subpackages hold larger
// helpers (network namespaces, pty pairs, Debian's kernel, guest builds,
// the e2e and reliability environment).
package testutil
