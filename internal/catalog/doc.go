// Package catalog is banger's built-in catalog of images and kernels: what an
// entry looks like, parsing and validating a catalog document, resolving a
// bundle's URL against the configured catalog base URL, and the two embedded
// documents themselves (images.json: named root filesystems and the kernel
// each boots; kernels.json: named guest kernels), each with where its
// pre-built bundle is published, if anywhere, and how to build it locally
// otherwise.
package catalog
