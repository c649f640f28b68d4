-- A snapshot: a VM's memory and device state and a frozen copy of its
-- disks, saved by `vm snapshot` (or by the warm pool), restored by
-- `vm create --from` and `vm run --from`. It is tied to what it can be
-- restored with: the VMM and that VMM's version, the kernel and image (by
-- id, so neither can be removed while a snapshot needs it), the guest
-- agent's version, the vCPUs and memory. vm_id and vm_name name the VM it
-- was taken from, which may be gone since: a snapshot outlives its VM
-- unless it is removed with it.
CREATE TABLE snapshots (
    id            TEXT PRIMARY KEY NOT NULL CHECK (id <> ''),
    name          TEXT NOT NULL UNIQUE CHECK (name <> ''),
    vm_id         TEXT NOT NULL DEFAULT '',
    vm_name       TEXT NOT NULL DEFAULT '',
    image_id      TEXT NOT NULL REFERENCES images (id) ON DELETE RESTRICT,
    kernel_id     TEXT NOT NULL REFERENCES kernels (id) ON DELETE RESTRICT,
    vmm_kind      TEXT NOT NULL CHECK (vmm_kind <> ''),
    vmm_version   TEXT NOT NULL DEFAULT '',
    agent_version TEXT NOT NULL DEFAULT '',
    vcpus         INTEGER NOT NULL CHECK (vcpus >= 1),
    memory_bytes  INTEGER NOT NULL CHECK (memory_bytes > 0),
    disk_bytes    INTEGER NOT NULL CHECK (disk_bytes > 0),
    -- The directory holding the snapshot's files, and their names in it
    -- (a JSON array of plain file names).
    dir           TEXT NOT NULL CHECK (dir <> ''),
    files         TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(files) AND json_type(files) = 'array'),
    size_bytes    INTEGER NOT NULL DEFAULT 0 CHECK (size_bytes >= 0),
    -- saving: being written (a crash leaves it for the daemon to remove);
    -- ready: complete and restorable.
    state         TEXT NOT NULL DEFAULT 'saving' CHECK (state IN ('saving', 'ready')),
    -- 1 for the warm pool's own snapshots, which bangerd replaces by itself.
    warm          INTEGER NOT NULL DEFAULT 0 CHECK (warm IN (0, 1)),
    created_at    TEXT NOT NULL
) STRICT;

-- A VM made from a snapshot resumes it at its first start instead of
-- booting; restore_from holds the snapshot's id until that start has
-- succeeded ("" for every other VM). A snapshot cannot be removed while a
-- VM still needs it.
ALTER TABLE vms ADD COLUMN restore_from TEXT NOT NULL DEFAULT '';
