package store

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"
)

func allMigrations(t *testing.T) []migration {
	t.Helper()
	migs, err := embeddedMigrations()
	if err != nil {
		t.Fatalf("embedded migrations: %v", err)
	}
	return migs
}

func openTest(t *testing.T, path string, migs []migration) *Store {
	t.Helper()
	s, err := openWith(context.Background(), path, migs)
	if err != nil {
		t.Fatalf("open %s with %d migrations: %v", path, len(migs), err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func tables(t *testing.T, s *Store) []string {
	t.Helper()
	rows, err := s.db.Query(`SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}

func TestEmbeddedMigrationsMatchSchemaVersion(t *testing.T) {
	migs := allMigrations(t)
	if len(migs) != SchemaVersion {
		t.Fatalf("%d embedded migrations, but SchemaVersion = %d: bump the constant with each new migration", len(migs), SchemaVersion)
	}
	for i, m := range migs {
		if m.version != i+1 || strings.TrimSpace(m.sql) == "" {
			t.Errorf("migration %d: version %d, name %s, %d bytes of SQL", i, m.version, m.name, len(m.sql))
		}
	}
}

func TestLoadMigrationsRejectsBadNumbering(t *testing.T) {
	good := &fstest.MapFile{Data: []byte("CREATE TABLE t (x INTEGER);")}
	cases := map[string]fstest.MapFS{
		"gap":       {"m/0001_a.sql": good, "m/0003_c.sql": good},
		"duplicate": {"m/0001_a.sql": good, "m/0001_b.sql": good},
		"no number": {"m/0001_a.sql": good, "m/second.sql": good},
		"zero":      {"m/0000_a.sql": good},
		"empty":     {"m/README": good},
	}
	for name, fsys := range cases {
		if migs, err := loadMigrations(fsys, "m"); err == nil {
			t.Errorf("%s: accepted %d migrations, want an error", name, len(migs))
		}
	}
	migs, err := loadMigrations(fstest.MapFS{"m/0002_b.sql": good, "m/0001_a.sql": good, "m/notes.txt": good}, "m")
	if err != nil || len(migs) != 2 || migs[0].name != "0001_a.sql" || migs[1].version != 2 {
		t.Fatalf("good list: %v, %+v", err, migs)
	}
}

func TestOpenFreshStore(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "state", "nested")
	path := filepath.Join(dir, "banger.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	if s.Path() != path {
		t.Errorf("Path() = %q, want %q", s.Path(), path)
	}
	v, err := s.Version(ctx)
	if err != nil || v != SchemaVersion {
		t.Fatalf("Version() = %d, %v; want %d", v, err, SchemaVersion)
	}
	got := tables(t, s)
	for _, want := range []string{"schema_version", "operations", "kernels", "images", "vms"} {
		if !slices.Contains(got, want) {
			t.Errorf("table %s missing; tables: %v", want, got)
		}
	}
	var rowsInVersion int
	if err := s.db.QueryRow(`SELECT count(*) FROM schema_version`).Scan(&rowsInVersion); err != nil || rowsInVersion != 1 {
		t.Errorf("schema_version has %d rows (%v), want exactly 1", rowsInVersion, err)
	}

	var mode string
	if err := s.db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q (%v), want wal", mode, err)
	}
	var fk int
	if err := s.db.QueryRow(`PRAGMA foreign_keys`).Scan(&fk); err != nil || fk != 1 {
		t.Errorf("foreign_keys = %d (%v), want 1", fk, err)
	}
	var busy int
	if err := s.db.QueryRow(`PRAGMA busy_timeout`).Scan(&busy); err != nil || busy != busyTimeoutMillis {
		t.Errorf("busy_timeout = %d (%v), want %d", busy, err, busyTimeoutMillis)
	}

	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) && p != path {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if m := fi.Mode().Perm(); m != 0o600 {
			t.Errorf("%s has mode %o, want 600", p, m)
		}
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != 0o700 {
		t.Errorf("state dir has mode %o, want 700", m)
	}
}

func TestOpenLeavesFileModeAlone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "banger.db")
	s := openTest(t, path, allMigrations(t))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	openTest(t, path, allMigrations(t))
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != 0o640 {
		t.Errorf("mode after reopen = %o, want 640: the user's mode was changed", m)
	}
}

func TestForeignKeysEnforced(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "banger.db"), allMigrations(t))
	_, err := s.db.Exec(`INSERT INTO vms (id, name, image_id, kernel_id, vcpus, memory_bytes, disk_bytes, created_at, updated_at)
		VALUES ('v1', 'vm1', 'no-such-image', 'no-such-kernel', 1, 1, 1, 'x', 'x')`)
	if err == nil {
		t.Fatal("a VM referring to a missing image and kernel was accepted")
	}
}

// seeders put rows into the tables each version introduces; checkers verify
// those rows are still there after an upgrade.
var seeders = map[int]func(t *testing.T, s *Store){
	1: func(t *testing.T, s *Store) {
		now := time.Date(2025, 3, 4, 5, 6, 7, 8, time.UTC)
		if err := s.PutOperation(context.Background(), Operation{
			ID: "op-v1", Kind: "image.pull", Target: "debian", State: StateRunning,
			Done: 10, Total: 100, Unit: UnitBytes, CreatedAt: now,
		}); err != nil {
			t.Fatal(err)
		}
	},
	2: func(t *testing.T, s *Store) { insertCore(t, s, "2") },
	5: func(t *testing.T, s *Store) {
		if err := s.setStateID(context.Background(), "0123456789abcdef0123456789abcdef"); err != nil {
			t.Fatal(err)
		}
	},
	4: func(t *testing.T, s *Store) {
		insertCore(t, s, "4")
		if _, err := s.db.Exec(`INSERT INTO leases (vm_id, ip, created_at) VALUES ('vm-4', '10.200.0.9', '2025-01-01T00:00:00.000000000Z')`); err != nil {
			t.Fatal(err)
		}
	},
	6: func(t *testing.T, s *Store) {
		// Raw SQL: this seeds a store at version 6, which the code of a
		// later version (PutVM) cannot write.
		insertCore(t, s, "6")
		for _, q := range []string{
			`UPDATE vms SET vmm_requested = 'auto', vmm_kind = 'qemu' WHERE id = 'vm-6'`,
			`INSERT INTO vm_ports (vm_id, host_port, guest_port) VALUES ('vm-6', 8080, 80)`,
		} {
			if _, err := s.db.Exec(q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
	},
	7: func(t *testing.T, s *Store) {
		insertCore(t, s, "7")
		now := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
		if err := s.PutSnapshot(context.Background(), Snapshot{ID: "s7", Name: "snap7", ImageID: "i-7", KernelID: "k-7",
			VMMKind: "qemu", VCPUs: 1, MemoryBytes: 1 << 29, DiskBytes: 1 << 30, Dir: "/s/7",
			Files: []string{"state"}, State: SnapshotReady, CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
	},
	3: func(t *testing.T, s *Store) {
		insertCore(t, s, "3")
		if _, err := s.db.Exec(`UPDATE vms SET vmm_reason = 'no /dev/kvm', ssh_port = 2222 WHERE id = 'vm-3'`); err != nil {
			t.Fatal(err)
		}
	},
}

var checkers = map[int]func(t *testing.T, s *Store){
	7: func(t *testing.T, s *Store) {
		sn, err := s.GetSnapshot(context.Background(), "snap7")
		if err != nil || sn.ImageID != "i-7" || len(sn.Files) != 1 || sn.State != SnapshotReady {
			t.Errorf("snapshot of version 7: %+v, %v", sn, err)
		}
	},
	6: func(t *testing.T, s *Store) {
		v, err := s.GetVM(context.Background(), "vm6")
		if err != nil || v.VMMRequested != "auto" || v.VMMKind != "qemu" || len(v.Publish) != 1 || v.Publish[0].String() != "8080:80" {
			t.Errorf("VM of version 6: %+v, %v", v, err)
		}
	},
	5: func(t *testing.T, s *Store) {
		if id, err := s.StateID(context.Background()); err != nil || id != "0123456789abcdef0123456789abcdef" {
			t.Errorf("state dir id after upgrade: %q, %v", id, err)
		}
	},
	4: func(t *testing.T, s *Store) {
		ls, err := s.ListLeases(context.Background())
		if err != nil || ls["vm-4"].String() != "10.200.0.9" {
			t.Errorf("leases after upgrade: %v, %v", ls, err)
		}
	},
	1: func(t *testing.T, s *Store) {
		op, err := s.GetOperation(context.Background(), "op-v1")
		if err != nil {
			t.Fatal(err)
		}
		if op.Target != "debian" || op.Done != 10 || op.State != StateRunning {
			t.Errorf("operation after upgrade: %+v", op)
		}
	},
	2: func(t *testing.T, s *Store) {
		var name string
		if err := s.db.QueryRow(`SELECT v.name FROM vms v JOIN images i ON i.id = v.image_id JOIN kernels k ON k.id = v.kernel_id WHERE v.id = 'vm-2'`).Scan(&name); err != nil || name != "vm2" {
			t.Errorf("VM after upgrade: %q, %v", name, err)
		}
	},
	3: func(t *testing.T, s *Store) {
		// A VM from before migration 3 reads back with the new fields empty.
		v, err := s.GetVM(context.Background(), "vm2")
		if err == nil && (v.VMMReason != "" || v.SSHPort != 0) {
			t.Errorf("VM from version 2 after upgrade: %+v", v)
		}
		v, err = s.GetVM(context.Background(), "vm3")
		if err == nil && (len(v.Publish) != 0 || v.Network != "") {
			t.Errorf("VM of version 3 after upgrade to 4: %+v", v)
		}
		if err != nil || v.VMMReason != "no /dev/kvm" || v.SSHPort != 2222 {
			t.Errorf("VM of version 3: %+v, %v", v, err)
		}
	},
}

func insertCore(t *testing.T, s *Store, suffix string) {
	t.Helper()
	for _, q := range []string{
		`INSERT INTO kernels (id, name, vmlinux_path, created_at) VALUES ('k-` + suffix + `', 'kernel` + suffix + `', '/k/vmlinux', '2025-01-01T00:00:00.000000000Z')`,
		`INSERT INTO images (id, name, rootfs_path, kernel_ref, size_bytes, origin_kind, created_at) VALUES ('i-` + suffix + `', 'image` + suffix + `', '/i/rootfs.ext4', 'kernel` + suffix + `', 1024, 'catalog', '2025-01-01T00:00:00.000000000Z')`,
		`INSERT INTO vms (id, name, image_id, kernel_id, vcpus, memory_bytes, disk_bytes, created_at, updated_at) VALUES ('vm-` + suffix + `', 'vm` + suffix + `', 'i-` + suffix + `', 'k-` + suffix + `', 2, 1073741824, 4294967296, '2025-01-01T00:00:00.000000000Z', '2025-01-01T00:00:00.000000000Z')`,
	} {
		if _, err := s.db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

func TestUpgradeFromEveryEarlierVersion(t *testing.T) {
	all := allMigrations(t)
	for k := 0; k < len(all); k++ {
		t.Run("from_"+strconv.Itoa(k), func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "banger.db")
			old := openTest(t, path, all[:k])
			if v, err := old.Version(ctx); err != nil || v != k {
				t.Fatalf("old store at version %d (%v), want %d", v, err, k)
			}
			for v := 1; v <= k; v++ {
				seeders[v](t, old)
			}
			if err := old.Close(); err != nil {
				t.Fatal(err)
			}

			s, err := Open(ctx, path)
			if err != nil {
				t.Fatalf("upgrade from %d: %v", k, err)
			}
			defer s.Close()
			if v, err := s.Version(ctx); err != nil || v != SchemaVersion {
				t.Fatalf("after upgrade: version %d (%v), want %d", v, err, SchemaVersion)
			}
			for v := 1; v <= k; v++ {
				checkers[v](t, s)
			}
			// The tables the upgrade added work.
			for v := k + 1; v <= len(all); v++ {
				seeders[v](t, s)
				checkers[v](t, s)
			}
		})
	}
}

// snapshot records every file in dir with its content.
func snapshot(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string][]byte{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m[e.Name()] = b
	}
	return m
}

func sameFiles(t *testing.T, before, after map[string][]byte) {
	t.Helper()
	for name, b := range before {
		a, ok := after[name]
		if !ok {
			t.Errorf("%s disappeared", name)
		} else if !bytes.Equal(a, b) {
			t.Errorf("%s changed (%d bytes before, %d after)", name, len(b), len(a))
		}
	}
	for name := range after {
		if _, ok := before[name]; !ok {
			t.Errorf("%s appeared", name)
		}
	}
}

func TestOpenRefusesNewerStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "banger.db")
	s := openTest(t, path, allMigrations(t))
	if _, err := s.db.Exec(`UPDATE schema_version SET version = ?`, SchemaVersion+1); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, dir)
	fiBefore, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}

	s2, err := Open(ctx, path)
	if err == nil {
		s2.Close()
		t.Fatal("Open accepted a store newer than this binary")
	}
	var tooNew *TooNewError
	if !errors.As(err, &tooNew) {
		t.Fatalf("error %v (%T) is not a *TooNewError", err, err)
	}
	if tooNew.Path != path || tooNew.Found != SchemaVersion+1 || tooNew.Known != SchemaVersion {
		t.Errorf("TooNewError = %+v", tooNew)
	}
	msg := err.Error()
	for _, want := range []string{
		path,
		"schema version " + strconv.Itoa(SchemaVersion+1),
		"up to " + strconv.Itoa(SchemaVersion),
		"install a newer banger",
		"state_dir",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	sameFiles(t, before, snapshot(t, dir))
	fiAfter, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !fiAfter.ModTime().Equal(fiBefore.ModTime()) || fiAfter.Size() != fiBefore.Size() {
		t.Errorf("file metadata changed: %v/%d -> %v/%d", fiBefore.ModTime(), fiBefore.Size(), fiAfter.ModTime(), fiAfter.Size())
	}
}

// An older binary (knowing fewer migrations) meets a store a newer one wrote.
func TestOlderBinaryRefusesStore(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "banger.db")
	all := allMigrations(t)
	s := openTest(t, path, all)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, dir)
	_, err := openWith(context.Background(), path, all[:1])
	var tooNew *TooNewError
	if !errors.As(err, &tooNew) || tooNew.Found != len(all) || tooNew.Known != 1 {
		t.Fatalf("error = %v, want a TooNewError %d > 1", err, len(all))
	}
	sameFiles(t, before, snapshot(t, dir))
}

func TestBrokenMigrationRollsBack(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "banger.db")
	all := allMigrations(t)
	s := openTest(t, path, all)
	seeders[1](t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	broken := append(slices.Clone(all), migration{
		version: len(all) + 1,
		name:    "0099_broken.sql",
		sql: `CREATE TABLE half_done (x INTEGER);
		      INSERT INTO half_done VALUES (1);
		      ALTER TABLE operations ADD COLUMN extra TEXT;
		      INSERT INTO no_such_table VALUES (1);`,
	})
	_, err := openWith(ctx, path, broken)
	if err == nil {
		t.Fatal("a broken migration succeeded")
	}
	for _, want := range []string{"0099_broken.sql", "version " + strconv.Itoa(len(all)), path} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}

	s = openTest(t, path, all)
	if v, err := s.Version(ctx); err != nil || v != len(all) {
		t.Fatalf("version after failed migration = %d (%v), want %d", v, err, len(all))
	}
	if slices.Contains(tables(t, s), "half_done") {
		t.Error("table half_done from the failed migration survived")
	}
	var n int
	if err := s.db.QueryRow(`SELECT count(*) FROM pragma_table_info('operations') WHERE name = 'extra'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("column from the failed migration survived (%d, %v)", n, err)
	}
	checkers[1](t, s)
}

// A failure in the middle of a multi-step upgrade keeps the steps before it.
func TestBrokenMigrationKeepsEarlierSteps(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "banger.db")
	all := allMigrations(t)
	openTest(t, path, all[:1]).Close()
	broken := append(slices.Clone(all), migration{version: len(all) + 1, name: "0099_broken.sql", sql: `SELEC nonsense`})
	if _, err := openWith(ctx, path, broken); err == nil {
		t.Fatal("a broken migration succeeded")
	}
	s := openTest(t, path, all)
	if v, err := s.Version(ctx); err != nil || v != len(all) {
		t.Fatalf("version = %d (%v), want %d", v, err, len(all))
	}
}

func TestOpenRejectsNonDatabase(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "banger.db")
	junk := bytes.Repeat([]byte("this is not an SQLite database\n"), 200)
	if err := os.WriteFile(path, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, dir)
	s, err := Open(context.Background(), path)
	if err == nil {
		s.Close()
		t.Fatal("Open accepted a file that is not a database")
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not name the file", err)
	}
	sameFiles(t, before, snapshot(t, dir))
}

func TestOpenRejectsDirectoryAndEmptyPath(t *testing.T) {
	dir := t.TempDir()
	if s, err := Open(context.Background(), dir); err == nil {
		s.Close()
		t.Error("Open accepted a directory")
	}
	if s, err := Open(context.Background(), ""); err == nil {
		s.Close()
		t.Error("Open accepted an empty path")
	}
}

func TestOpenPathNeedingEscapes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a dir?with#odd%chars")
	path := filepath.Join(dir, "banger.db")
	s := openTest(t, path, allMigrations(t))
	if v, err := s.Version(context.Background()); err != nil || v != SchemaVersion {
		t.Fatalf("version %d, %v", v, err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database not at the expected path: %v", err)
	}
}

// Several processes (here: several Stores) opening one fresh file at once all
// succeed and each migration is applied once.
func TestConcurrentOpenOfFreshStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "banger.db")
	var wg sync.WaitGroup
	errs := make([]error, 4)
	stores := make([]*Store, 4)
	for i := range stores {
		wg.Go(func() {
			stores[i], errs[i] = Open(context.Background(), path)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("open %d: %v", i, err)
			continue
		}
		defer stores[i].Close()
		if v, err := stores[i].Version(context.Background()); err != nil || v != SchemaVersion {
			t.Errorf("store %d at version %d (%v)", i, v, err)
		}
	}
}
