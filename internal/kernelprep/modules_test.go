package kernelprep

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func names(ms []*Module) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Name)
	}
	return out
}

func TestParseModinfo(t *testing.T) {
	mi := ParseModinfo([]byte("alias=a\x00license=GPL\x00\x00junk\x00alias=b\x00depends=x,y\x00name=foo_bar\x00softdep=pre: crc32c post: z\x00"))
	if !reflect.DeepEqual(mi["alias"], []string{"a", "b"}) || mi.First("name") != "foo_bar" || mi.First("depends") != "x,y" {
		t.Fatalf("modinfo = %v", mi)
	}
	if _, ok := mi["junk"]; ok {
		t.Fatal("a string without '=' became a key")
	}
	pre, post := parseSoftdep(mi["softdep"])
	if !reflect.DeepEqual(pre, []string{"crc32c"}) || !reflect.DeepEqual(post, []string{"z"}) {
		t.Fatalf("softdep pre=%v post=%v", pre, post)
	}
}

func TestReadModinfoCompressed(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"a-b.ko", "c.ko.xz", "d.ko.zst", "e.ko.gz"} {
		writeModules(t, dir, mod(f, "x"))
		mi, err := ReadModinfo(filepath.Join(dir, f))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if mi.First("name") != moduleName(f) || mi.First("depends") != "x" {
			t.Fatalf("%s: modinfo %v", f, mi)
		}
	}
	os.WriteFile(filepath.Join(dir, "bad.ko"), []byte("not elf"), 0o644)
	if _, err := ReadModinfo(filepath.Join(dir, "bad.ko")); err == nil || !strings.Contains(err.Error(), "bad.ko") {
		t.Fatalf("garbage module: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "nomodinfo.ko"), testELF(t, 100, 62), 0o644)
	if _, err := ReadModinfo(filepath.Join(dir, "nomodinfo.ko")); err == nil || !strings.Contains(err.Error(), ".modinfo") {
		t.Fatalf("ELF without .modinfo: %v", err)
	}
}

// A diamond: top needs left and right, both need base; base is xz, right
// zstd. Softdeps name an alias and a module; one module is built in.
func diamondTree(t *testing.T) string {
	dir := t.TempDir()
	writeModules(t, dir,
		mod("kernel/top.ko", "left,right", "softdep=pre: crypto-sum post: late"),
		mod("kernel/sub/left.ko", "base-mod"),
		mod("kernel/sub/right.ko.zst", "base_mod,builtin_one"),
		mod("kernel/base-mod.ko.xz", ""),
		mod("kernel/crypto/sum_generic.ko", "", "alias=crypto-sum", "alias=sum"),
		mod("kernel/crypto/sum-fast.ko", "base_mod", "alias=crypto-sum"),
		mod("kernel/late.ko", ""),
		mod("kernel/unrelated.ko", "missing_dep"),
		mod("kernel/loop_a.ko", "loop_b"),
		mod("kernel/loop_b.ko", "loop_a"),
	)
	os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte("kernel/lib/builtin_one.ko\n"), 0o644)
	return dir
}

func TestModuleOrderDiamond(t *testing.T) {
	dir := diamondTree(t)
	ix, err := ScanModules(dir)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := ix.Order([]string{"top"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := names(ms)
	want := []string{"base_mod", "sum_fast", "sum_generic", "left", "right", "top", "late"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
	// Every hard dependency comes before its user, and nothing repeats.
	pos := map[string]int{}
	for i, m := range ms {
		if _, dup := pos[m.Name]; dup {
			t.Fatalf("%s listed twice", m.Name)
		}
		pos[m.Name] = i
	}
	for _, m := range ms {
		for _, d := range m.Depends {
			if ix.Builtin(d) {
				continue
			}
			if pos[d] > pos[m.Name] {
				t.Fatalf("%s loads before its dependency %s", m.Name, d)
			}
		}
	}
	// Same inputs, same order; paths match names.
	paths, err := ModuleOrder(dir, []string{"top"})
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range paths {
		if moduleName(p) != want[i] {
			t.Fatalf("path %d is %s, want module %s", i, p, want[i])
		}
	}
}

func TestModuleOrderAliasesBuiltinsOptional(t *testing.T) {
	ix, err := ScanModules(diamondTree(t))
	if err != nil {
		t.Fatal(err)
	}
	ms, err := ix.Order([]string{"sum", "builtin_one", "base-mod"}, []string{"nonexistent", "late"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(ms), []string{"sum_generic", "base_mod", "late"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
}

func TestModuleOrderErrors(t *testing.T) {
	dir := diamondTree(t)
	cases := map[string]struct {
		wanted []string
		want   []string
	}{
		"missing wanted": {[]string{"top", "nosuch"}, []string{`"nosuch" not found`, dir}},
		"missing dep":    {[]string{"unrelated"}, []string{`"missing_dep"`, "needed by unrelated"}},
		"cycle":          {[]string{"loop_a"}, []string{"cycle", "loop_a -> loop_b -> loop_a"}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := ModuleOrder(dir, c.wanted)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestScanModulesDuplicate(t *testing.T) {
	dir := t.TempDir()
	writeModules(t, dir, mod("a/x.ko", ""), mod("b/x.ko.xz", ""))
	if _, err := ScanModules(dir); err == nil || !strings.Contains(err.Error(), "two files") {
		t.Fatalf("duplicate module: %v", err)
	}
}

func FuzzParseModinfo(f *testing.F) {
	f.Add([]byte("name=x\x00depends=a,b\x00softdep=pre: c post: d\x00"))
	f.Add([]byte("=\x00==\x00a=b=c"))
	f.Fuzz(func(t *testing.T, data []byte) {
		mi := ParseModinfo(data)
		for k, vs := range mi {
			if k == "" || strings.ContainsRune(k, 0) || strings.Contains(k, "=") {
				t.Fatalf("bad key %q", k)
			}
			for _, v := range vs {
				if !strings.Contains(string(data), k+"="+v) {
					t.Fatalf("value %q of %q is not in the input", v, k)
				}
			}
		}
		pre, post := parseSoftdep(mi["softdep"])
		for _, s := range slices.Concat(pre, post) {
			if s == "" || s == "pre:" || s == "post:" {
				t.Fatalf("bad softdep name %q", s)
			}
		}
		_ = splitList(mi.First("depends"))
	})
}
