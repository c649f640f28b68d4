// Package tarsafe is banger's one tar extractor. Every stream it unpacks
// (a guest's answer to vm cp, a catalog bundle, an OCI image layer, a
// kernel package's data.tar) is treated as possibly hostile: all writes
// go through an os.Root (and, where os.Root has no call, through *at
// system calls on a directory descriptor opened inside it), no symlink is
// followed, every parent of an entry is checked to be a real directory,
// and names, entries and bytes are bounded. What differs between callers
// is policy, given in Options: what may be replaced, whose owners and
// which mode bits are kept, what happens to devices, whether OCI whiteouts
// apply, whether holes are kept, and a Filter and a Placed hook for
// callers that take only some members or record what the tree cannot
// carry. It knows nothing about its callers.
package tarsafe
