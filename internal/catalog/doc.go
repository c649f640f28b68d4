// Package catalog defines what an entry of banger's embedded image and kernel
// catalogs looks like, parses and validates a catalog document, and resolves a
// bundle's URL against the configured catalog base URL. It holds no catalog
// data itself; imagecat and kernelcat embed theirs and parse it with this
// package.
package catalog
