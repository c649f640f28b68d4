package catalog

import (
	"strings"
	"testing"
)

const sha = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestParseGood(t *testing.T) {
	doc := `{"entries":[
	 {"name":"k1","version":"6.1","arch":"x86_64","description":"d","bundle":{"url":"kernels/k1.tar.zst","sha256":"` + sha + `","size":10}},
	 {"name":"debian-6.1-amd64","version":"6.6","arch":"amd64","description":"d","build":{"kind":"apt-kernel","params":{"package":"p"}}}
	]}`
	c, err := Parse(Kernels, []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	e, ok := c.Lookup("k1")
	if !ok || e.Bundle == nil || e.Bundle.Size != 10 || e.Bundle.URL != "kernels/k1.tar.zst" {
		t.Fatalf("Lookup(k1) = %+v, %v", e, ok)
	}
	if _, ok := c.Lookup("nope"); ok {
		t.Error("Lookup of a missing name succeeded")
	}
	if got := c.Names(); strings.Join(got, ",") != "k1,debian-6.1-amd64" {
		t.Errorf("Names = %v, want catalog order", got)
	}
	// Callers cannot change the catalog through what they are given.
	e.Bundle.Size = 99
	es := c.Entries()
	es[1].Build.Params["package"] = "changed"
	again, _ := c.Lookup("k1")
	k2, _ := c.Lookup("debian-6.1-amd64")
	if again.Bundle.Size != 10 || k2.Build.Params["package"] != "p" {
		t.Error("catalog was changed through a returned entry")
	}
}

func TestParseRejects(t *testing.T) {
	cases := map[string]struct {
		kind Kind
		doc  string
		want string
	}{
		"bad json":        {Images, `{"entries":[`, "decoding JSON"},
		"unknown field":   {Images, `{"entries":[],"extra":1}`, "extra"},
		"trailing":        {Images, `{"entries":[]} {}`, "trailing"},
		"upper name":      {Kernels, entry(`"name":"Bad"`), `name "Bad"`},
		"leading hyphen":  {Kernels, entry(`"name":"-x"`), `name "-x"`},
		"double dot":      {Kernels, entry(`"name":"a..b"`), `name "a..b"`},
		"slash in name":   {Kernels, entry(`"name":"a/b"`), `name "a/b"`},
		"long name":       {Kernels, entry(`"name":"` + strings.Repeat("a", 64) + `"`), "not a valid name"},
		"arch":            {Kernels, entry(`"arch":"arm64"`), `arch "arm64"`},
		"no version":      {Kernels, entry(`"version":""`), "version is empty"},
		"short sha":       {Kernels, entry(`"bundle":{"url":"x","sha256":"abc","size":1}`), `sha256 "abc"`},
		"upper sha":       {Kernels, entry(`"bundle":{"url":"x","sha256":"` + strings.ToUpper(sha) + `","size":1}`), "lowercase hex"},
		"zero size":       {Kernels, entry(`"bundle":{"url":"x","sha256":"` + sha + `","size":0}`), "size 0"},
		"ftp url":         {Kernels, entry(`"bundle":{"url":"ftp://h/x","sha256":"` + sha + `","size":1}`), "not supported"},
		"dotdot url":      {Kernels, entry(`"bundle":{"url":"../x","sha256":"` + sha + `","size":1}`), `".."`},
		"rooted url":      {Kernels, entry(`"bundle":{"url":"/x","sha256":"` + sha + `","size":1}`), "slash"},
		"nothing":         {Kernels, entry(`"build":null`), "neither a bundle nor a build recipe"},
		"empty kind":      {Kernels, entry(`"build":{"kind":""}`), "kind is empty"},
		"kernel on kern":  {Kernels, entry(`"kernel":"k"`), "must not name a kernel"},
		"image no kernel": {Images, entry(`"kernel":""`), `kernel ""`},
		"duplicate":       {Kernels, `{"entries":[` + one(``) + `,` + one(``) + `]}`, "earlier entry"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse(c.kind, []byte(c.doc))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Parse error %v, want it to mention %q", err, c.want)
			}
		})
	}
}

// one is a valid entry (for either kind) with override appended; later keys
// win in encoding/json, so override replaces a field.
func one(override string) string {
	s := `{"name":"x","version":"1","arch":"x86_64","description":"d","kernel":"k","build":{"kind":"b"}`
	if override != "" {
		s += "," + override
	}
	return s + "}"
}

func entry(override string) string {
	o := override
	if !strings.Contains(o, `"kernel"`) {
		if o != "" {
			o += ","
		}
		o += `"kernel":""`
	}
	return `{"entries":[` + one(o) + `]}`
}

func TestResolveURL(t *testing.T) {
	cases := []struct {
		base, url, want, err string
	}{
		{"", "https://h.test/a/b.tar.zst", "https://h.test/a/b.tar.zst", ""},
		{"https://ignored.test/", "file:///srv/b.tar.zst", "file:///srv/b.tar.zst", ""},
		{"https://h.test/cat", "images/x.tar.zst", "https://h.test/cat/images/x.tar.zst", ""},
		{"https://h.test/cat/", "images/x.tar.zst", "https://h.test/cat/images/x.tar.zst", ""},
		{"file:///srv/cat", "x.tar.zst", "file:///srv/cat/x.tar.zst", ""},
		{"http://h.test:8080/c?q=1", "x y.tar.zst", "http://h.test:8080/c/x%20y.tar.zst", ""},
		{"", "x.tar.zst", "", "catalog_base_url"},
		{"ftp://h/c", "x.tar.zst", "", "not supported"},
		{"h.test/c", "x.tar.zst", "", "no scheme"},
		{"https://h.test/c", "../x.tar.zst", "", `".."`},
		{"https://h.test/c", "gopher://h/x", "", "not supported"},
	}
	for _, c := range cases {
		got, err := ResolveURL(c.base, Bundle{URL: c.url, SHA256: sha, Size: 1})
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ResolveURL(%q, %q) = %q, %v; want error mentioning %q", c.base, c.url, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ResolveURL(%q, %q) = %q, %v; want %q", c.base, c.url, got, err, c.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"entries":[` + one(``) + `]}`))
	f.Add([]byte(`{"entries":[{"name":"a","bundle":{"url":"x","sha256":"` + sha + `","size":5}}]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, k := range []Kind{Images, Kernels} {
			c, err := Parse(k, data)
			if err != nil {
				continue
			}
			for _, e := range c.Entries() {
				if !IsName(e.Name) {
					t.Fatalf("accepted entry with bad name %q", e.Name)
				}
				if got, ok := c.Lookup(e.Name); !ok || got.Name != e.Name {
					t.Fatalf("Lookup(%q) failed for a listed entry", e.Name)
				}
			}
		}
	})
}
