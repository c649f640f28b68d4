// Package update replaces the binaries of an installed banger with those of
// a verified release and restarts what runs on them: it finds the install
// beside the running executable (and refuses a source checkout, a missing
// binary or a directory it cannot write), stages the new files in a private
// directory on the same filesystem, swaps each binary by rename while
// keeping the old one as <name>.prev, restarts the helper and bangerd in an
// order that never pairs a bangerd with a helper of another protocol, and
// puts the .prev binaries back when the new ones do not come up. It never
// downloads or verifies anything itself: the CLI hands it files that
// internal/release has checked.
package update
