// Package imagemgr manages banger's images and kernels on disk and in the
// store: importing kernels, registering unmanaged images, promoting them into
// managed artefacts, listing and removing. Managed artefacts live under the
// state dir and go with their row; unmanaged files belong to the user and are
// never modified or deleted.
package imagemgr
