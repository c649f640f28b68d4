// Package imagemgr manages banger's images and kernels on disk and in the
// store: importing kernels, pulling and building images and kernels,
// registering unmanaged images, promoting them into managed artefacts,
// listing and removing. Managed artefacts live under the state dir and go
// with their row; unmanaged files belong to the user and are never modified
// or deleted. Long work builds in its own directory under <state_dir>/tmp
// and is renamed into place when complete; SweepLeftovers removes, at
// start, what a daemon that died mid-work left there and the processes
// still running on it.
package imagemgr
