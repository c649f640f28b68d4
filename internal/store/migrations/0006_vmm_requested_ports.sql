-- The VMM a VM asks for (vmm_requested: auto, qemu or firecracker, as
-- given at create) is kept apart from the one its last start resolved it
-- to (vmm_kind), so "auto" survives the first boot. Before this version
-- vmm_kind held both: it is copied as the request, and kept as the resolved
-- kind only where it names a VMM.
-- Which names are VMMs is the daemon's driver registry's to say, not the
-- schema's.
ALTER TABLE vms ADD COLUMN vmm_requested TEXT NOT NULL DEFAULT '';
UPDATE vms SET vmm_requested = CASE WHEN vmm_kind IN ('auto', 'qemu', 'firecracker') THEN vmm_kind ELSE '' END;
UPDATE vms SET vmm_kind = '' WHERE vmm_kind NOT IN ('qemu', 'firecracker');

-- Published ports as rows of integers instead of a "HOST:GUEST,..." text
-- column: one row per host port of a VM, checked by the store.
CREATE TABLE vm_ports (
    vm_id      TEXT NOT NULL REFERENCES vms (id) ON DELETE CASCADE,
    host_port  INTEGER NOT NULL CHECK (host_port > 0 AND host_port < 65536),
    guest_port INTEGER NOT NULL CHECK (guest_port > 0 AND guest_port < 65536),
    PRIMARY KEY (vm_id, host_port)
) STRICT;

WITH RECURSIVE split (vm_id, item, rest) AS (
    SELECT id, '', publish || ',' FROM vms WHERE publish <> ''
    UNION ALL
    SELECT vm_id, substr(rest, 1, instr(rest, ',') - 1), substr(rest, instr(rest, ',') + 1)
    FROM split WHERE rest <> ''
)
INSERT OR IGNORE INTO vm_ports (vm_id, host_port, guest_port)
SELECT vm_id,
       CAST(trim(substr(item, 1, instr(item, ':') - 1)) AS INTEGER),
       CAST(trim(substr(item, instr(item, ':') + 1)) AS INTEGER)
FROM split
WHERE instr(item, ':') > 0
  AND CAST(trim(substr(item, 1, instr(item, ':') - 1)) AS INTEGER) BETWEEN 1 AND 65535
  AND CAST(trim(substr(item, instr(item, ':') + 1)) AS INTEGER) BETWEEN 1 AND 65535;

ALTER TABLE vms DROP COLUMN publish;
