package kernelcat

import (
	_ "embed"
	"sync"

	"banger/internal/catalog"
)

//go:embed catalog.json
var catalogJSON []byte

// The shared catalog types, so callers need import only this package.
type (
	Entry   = catalog.Entry
	Bundle  = catalog.Bundle
	Recipe  = catalog.Recipe
	Catalog = catalog.Catalog
)

var load = sync.OnceValues(func() (*Catalog, error) {
	return catalog.Parse(catalog.Kernels, catalogJSON)
})

// Load returns the embedded kernel catalog, parsed and validated. It is parsed
// once; every call returns the same read-only catalog.
func Load() (*Catalog, error) { return load() }

// ResolveURL returns the absolute URL of a bundle, joining a relative bundle
// URL onto base (the configured catalog_base_url). It is an error for the
// URL to be relative when base is empty.
func ResolveURL(base string, b Bundle) (string, error) { return catalog.ResolveURL(base, b) }
