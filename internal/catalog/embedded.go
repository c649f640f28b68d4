package catalog

import (
	_ "embed"
	"sync"
)

// The embedded documents. scripts/publish-golden-image.sh and
// scripts/publish-kernel.sh patch them when a bundle is published.
var (
	//go:embed images.json
	imagesJSON []byte
	//go:embed kernels.json
	kernelsJSON []byte
)

var (
	loadImages  = sync.OnceValues(func() (*Catalog, error) { return Parse(Images, imagesJSON) })
	loadKernels = sync.OnceValues(func() (*Catalog, error) { return Parse(Kernels, kernelsJSON) })
)

// LoadImages returns the embedded image catalog, parsed and validated. It is
// parsed once; every call returns the same read-only catalog.
func LoadImages() (*Catalog, error) { return loadImages() }

// LoadKernels returns the embedded kernel catalog, parsed and validated. It
// is parsed once; every call returns the same read-only catalog.
func LoadKernels() (*Catalog, error) { return loadKernels() }
