// Package treestate records what tests compare of a directory tree (every
// path's type and mode, owner, link target, size, contents digest and
// modification time), so that a copy can be checked against its source
// and a tree that must not change can be checked before and after. It is
// imported by tests only.
package treestate
