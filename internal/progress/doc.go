// Package progress says how long work reports what it is doing: a phase by
// name, and a count of work done in a typed unit (bytes or items) with a
// total when one is known. The types travel unchanged from the work
// (golden, ociimage, imagemgr, bundle) through opstate, the store and the
// API to the CLI, which renders them.
package progress
