-- Kernels, images and VMs. Paths are absolute host paths; '' means "none".
-- Timestamps are UTC text of fixed width (see 0001); NULL means "never".
CREATE TABLE kernels (
    id           TEXT PRIMARY KEY NOT NULL CHECK (id <> ''),
    name         TEXT NOT NULL UNIQUE CHECK (name <> ''),
    vmlinux_path TEXT NOT NULL CHECK (vmlinux_path <> ''),
    initrd_path  TEXT NOT NULL DEFAULT '',
    modules_dir  TEXT NOT NULL DEFAULT '',
    version      TEXT NOT NULL DEFAULT '',
    digest       TEXT NOT NULL DEFAULT '',
    managed      INTEGER NOT NULL DEFAULT 1 CHECK (managed IN (0, 1)),
    origin_kind  TEXT NOT NULL DEFAULT '',
    origin_ref   TEXT NOT NULL DEFAULT '',
    created_at   TEXT NOT NULL
) STRICT;

CREATE TABLE images (
    id             TEXT PRIMARY KEY NOT NULL CHECK (id <> ''),
    name           TEXT NOT NULL UNIQUE CHECK (name <> ''),
    managed        INTEGER NOT NULL DEFAULT 1 CHECK (managed IN (0, 1)),
    rootfs_path    TEXT NOT NULL CHECK (rootfs_path <> ''),
    work_seed_path TEXT NOT NULL DEFAULT '',
    -- A kernel name or catalog reference, resolved (and pulled) when a VM is
    -- created; it need not exist in kernels yet.
    kernel_ref     TEXT NOT NULL DEFAULT '',
    initrd_path    TEXT NOT NULL DEFAULT '',
    modules_dir    TEXT NOT NULL DEFAULT '',
    digest         TEXT NOT NULL DEFAULT '',
    size_bytes     INTEGER NOT NULL DEFAULT 0 CHECK (size_bytes >= 0),
    origin_kind    TEXT NOT NULL DEFAULT ''
                   CHECK (origin_kind IN ('', 'catalog', 'oci', 'register')),
    origin_ref     TEXT NOT NULL DEFAULT '',
    created_at     TEXT NOT NULL
) STRICT;

CREATE TABLE vms (
    id             TEXT PRIMARY KEY NOT NULL CHECK (id <> ''),
    name           TEXT NOT NULL UNIQUE CHECK (name <> ''),
    image_id       TEXT NOT NULL REFERENCES images (id) ON DELETE RESTRICT,
    kernel_id      TEXT NOT NULL REFERENCES kernels (id) ON DELETE RESTRICT,
    vcpus          INTEGER NOT NULL CHECK (vcpus >= 1),
    memory_bytes   INTEGER NOT NULL CHECK (memory_bytes > 0),
    disk_bytes     INTEGER NOT NULL CHECK (disk_bytes > 0),
    state          TEXT NOT NULL DEFAULT 'created'
                   CHECK (state IN ('created', 'starting', 'running', 'stopping', 'stopped', 'failed')),
    pid            INTEGER NOT NULL DEFAULT 0 CHECK (pid >= 0),
    -- Start time of pid (clock ticks since boot, /proc/<pid>/stat field 22),
    -- so a recycled pid is not mistaken for the VMM.
    pid_start_time INTEGER NOT NULL DEFAULT 0 CHECK (pid_start_time >= 0),
    api_socket     TEXT NOT NULL DEFAULT '',
    vmm_kind       TEXT NOT NULL DEFAULT '',
    ip             TEXT NOT NULL DEFAULT '',
    mac            TEXT NOT NULL DEFAULT '',
    tap            TEXT NOT NULL DEFAULT '',
    cow_kind       TEXT NOT NULL DEFAULT '',
    cow_device     TEXT NOT NULL DEFAULT '',
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    started_at     TEXT,
    stopped_at     TEXT,
    last_error     TEXT NOT NULL DEFAULT ''
) STRICT;

CREATE INDEX vms_by_image ON vms (image_id);
CREATE INDEX vms_by_kernel ON vms (kernel_id);
