package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path"
	"slices"
	"strings"
)

// Kind says which catalog a document belongs to; a few rules differ between
// the two (only images name a kernel).
type Kind string

const (
	Images  Kind = "image"
	Kernels Kind = "kernel"
)

// Entry is one named item of a catalog.
type Entry struct {
	Name        string  `json:"name"`
	Version     string  `json:"version"`
	Arch        string  `json:"arch"`
	Description string  `json:"description"`
	Kernel      string  `json:"kernel,omitempty"` // images only: the kernel catalog entry this image boots
	Bundle      *Bundle `json:"bundle,omitempty"` // nil: no pre-built bundle has been published
	Build       *Recipe `json:"build,omitempty"`  // nil: no way to build the artefacts locally
}

// Bundle names a published bundle: a tar archive compressed with zstd.
type Bundle struct {
	// URL is absolute (http, https or file) or a relative path that is
	// joined onto the configured catalog base URL.
	URL    string `json:"url"`
	SHA256 string `json:"sha256"` // 64 lowercase hex digits, of the compressed file
	Size   int64  `json:"size"`   // bytes of the compressed file
}

// Recipe says how to build an entry's artefacts on this host when no bundle
// can be had. Kind selects the builder; Params are the builder's inputs.
type Recipe struct {
	Kind   string            `json:"kind"`
	Params map[string]string `json:"params,omitempty"`
}

// Catalog is a parsed, validated catalog. It is read-only after Parse.
type Catalog struct {
	kind    Kind
	entries []Entry
	byName  map[string]int
}

type document struct {
	Entries []Entry `json:"entries"`
}

// Parse decodes and validates a catalog document of the given kind. Every
// problem found is reported, each naming the entry it concerns.
func Parse(kind Kind, data []byte) (*Catalog, error) {
	if kind != Images && kind != Kernels {
		return nil, fmt.Errorf("catalog: unknown catalog kind %q", kind)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var doc document
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%s catalog: decoding JSON: %w", kind, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%s catalog: trailing data after the JSON document", kind)
	}
	c := &Catalog{kind: kind, byName: make(map[string]int, len(doc.Entries))}
	var errs []error
	for i, e := range doc.Entries {
		label := fmt.Sprintf("entry %d", i)
		if e.Name != "" {
			label = fmt.Sprintf("entry %q", e.Name)
		}
		for _, problem := range validate(kind, e) {
			errs = append(errs, fmt.Errorf("%s catalog: %s: %s", kind, label, problem))
		}
		if _, dup := c.byName[e.Name]; dup && e.Name != "" {
			errs = append(errs, fmt.Errorf("%s catalog: %s: the name is used by an earlier entry", kind, label))
			continue
		}
		c.byName[e.Name] = len(c.entries)
		c.entries = append(c.entries, e)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

// Kind reports which catalog this is.
func (c *Catalog) Kind() Kind { return c.kind }

// Lookup returns the entry with the given name.
func (c *Catalog) Lookup(name string) (Entry, bool) {
	i, ok := c.byName[name]
	if !ok {
		return Entry{}, false
	}
	return clone(c.entries[i]), true
}

// Entries returns every entry, in catalog order. The result is a copy.
func (c *Catalog) Entries() []Entry {
	out := make([]Entry, len(c.entries))
	for i, e := range c.entries {
		out[i] = clone(e)
	}
	return out
}

// Names returns the entry names, in catalog order.
func (c *Catalog) Names() []string {
	out := make([]string, len(c.entries))
	for i, e := range c.entries {
		out[i] = e.Name
	}
	return out
}

func clone(e Entry) Entry {
	if e.Bundle != nil {
		b := *e.Bundle
		e.Bundle = &b
	}
	if e.Build != nil {
		r := Recipe{Kind: e.Build.Kind}
		if e.Build.Params != nil {
			r.Params = make(map[string]string, len(e.Build.Params))
			for k, v := range e.Build.Params {
				r.Params[k] = v
			}
		}
		e.Build = &r
	}
	return e
}

// ResolveURL returns the absolute URL of a bundle. An absolute bundle URL is
// returned as it is; a relative one is joined onto base (the configured
// catalog_base_url), which must then be set.
func ResolveURL(base string, b Bundle) (string, error) {
	u, err := url.Parse(b.URL)
	if err != nil {
		return "", fmt.Errorf("bundle URL %q does not parse: %v", b.URL, err)
	}
	if u.IsAbs() {
		if reason := checkAbsolute(u); reason != "" {
			return "", fmt.Errorf("bundle URL %q: %s", b.URL, reason)
		}
		return u.String(), nil
	}
	if reason := checkRelative(b.URL); reason != "" {
		return "", fmt.Errorf("bundle URL %q: %s", b.URL, reason)
	}
	if base == "" {
		return "", fmt.Errorf("bundle URL %q is relative and no catalog base URL is configured: set catalog_base_url in the config file to where the bundles are published (http, https or file URL)", b.URL)
	}
	bu, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("catalog base URL %q does not parse: %v; fix catalog_base_url in the config file", base, err)
	}
	if !bu.IsAbs() {
		return "", fmt.Errorf("catalog base URL %q has no scheme; set catalog_base_url to an http, https or file URL", base)
	}
	if reason := checkAbsolute(bu); reason != "" {
		return "", fmt.Errorf("catalog base URL %q: %s; fix catalog_base_url in the config file", base, reason)
	}
	// Treat the base as a directory whether or not it ends in a slash, so
	// "https://h/cat" + "x.tar.zst" is "https://h/cat/x.tar.zst".
	bu.RawQuery, bu.Fragment, bu.RawFragment = "", "", ""
	if !strings.HasSuffix(bu.Path, "/") {
		bu.Path += "/"
		if bu.RawPath != "" {
			bu.RawPath += "/"
		}
	}
	return bu.ResolveReference(u).String(), nil
}

func checkAbsolute(u *url.URL) string {
	switch strings.ToLower(u.Scheme) {
	case "http", "https":
		if u.Host == "" {
			return "it has no host"
		}
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return "a file URL must have no host"
		}
		if !strings.HasPrefix(u.Path, "/") {
			return "a file URL needs an absolute path"
		}
	default:
		return fmt.Sprintf("scheme %q is not supported (use http, https or file)", u.Scheme)
	}
	return ""
}

// checkRelative keeps relative bundle URLs beneath the base: a plain path with
// no leading slash, no "..", no query and no fragment.
func checkRelative(s string) string {
	if s == "" {
		return "it is empty"
	}
	if strings.HasPrefix(s, "/") || strings.HasPrefix(s, "\\") {
		return "a relative bundle URL must not start with a slash"
	}
	if strings.ContainsAny(s, "?#") {
		return "a relative bundle URL must not have a query or fragment"
	}
	if slices.Contains(strings.Split(s, "/"), "..") {
		return `a relative bundle URL must not contain ".."`
	}
	if path.Clean(s) == "." {
		return "it names no file"
	}
	return ""
}

func validate(kind Kind, e Entry) []string {
	var p []string
	if !IsName(e.Name) {
		p = append(p, fmt.Sprintf("name %q is not a valid name: use 1 to 63 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit", e.Name))
	}
	if strings.TrimSpace(e.Version) == "" {
		p = append(p, "version is empty")
	}
	if e.Arch != "x86_64" && e.Arch != "amd64" {
		p = append(p, fmt.Sprintf("arch %q is not supported: use x86_64 or amd64", e.Arch))
	}
	switch kind {
	case Images:
		if !IsName(e.Kernel) {
			p = append(p, fmt.Sprintf("kernel %q is not a valid kernel entry name", e.Kernel))
		}
	case Kernels:
		if e.Kernel != "" {
			p = append(p, "a kernel entry must not name a kernel")
		}
	}
	if e.Bundle == nil && e.Build == nil {
		p = append(p, "it has neither a bundle nor a build recipe, so it could never be installed")
	}
	if b := e.Bundle; b != nil {
		if !IsSHA256(b.SHA256) {
			p = append(p, fmt.Sprintf("bundle sha256 %q is not 64 lowercase hex digits", b.SHA256))
		}
		if b.Size <= 0 {
			p = append(p, fmt.Sprintf("bundle size %d must be greater than zero", b.Size))
		}
		u, err := url.Parse(b.URL)
		switch {
		case err != nil:
			p = append(p, fmt.Sprintf("bundle URL %q does not parse: %v", b.URL, err))
		case u.IsAbs():
			if reason := checkAbsolute(u); reason != "" {
				p = append(p, fmt.Sprintf("bundle URL %q: %s", b.URL, reason))
			}
		default:
			if reason := checkRelative(b.URL); reason != "" {
				p = append(p, fmt.Sprintf("bundle URL %q: %s", b.URL, reason))
			}
		}
	}
	if r := e.Build; r != nil && strings.TrimSpace(r.Kind) == "" {
		p = append(p, "build recipe kind is empty")
	}
	return p
}

// IsName reports whether s is a valid catalog entry name: DNS style, 1 to 63
// lowercase letters, digits, '-' and '.', starting and ending with a letter
// or digit, with no two dots in a row ("debian-6.1-amd64"). Such a name is
// also safe as a file name.
func IsName(s string) bool {
	if len(s) == 0 || len(s) > 63 || !isAlnum(s[0]) || !isAlnum(s[len(s)-1]) || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

// IsSHA256 reports whether s is a sha256 digest written as 64 lowercase hex
// digits.
func IsSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
