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

-- Only whole pairs of decimal digits are taken, as the old reader
-- (strconv.Atoi on each side) took them: SQLite's CAST reads a numeric
-- prefix, so "8080x:80" or "1e3:22" would otherwise become ports.
WITH RECURSIVE split (vm_id, item, rest) AS (
    SELECT id, '', publish || ',' FROM vms WHERE publish <> ''
    UNION ALL
    SELECT vm_id, substr(rest, 1, instr(rest, ',') - 1), substr(rest, instr(rest, ',') + 1)
    FROM split WHERE rest <> ''
),
pairs (vm_id, h, g) AS (
    SELECT vm_id, trim(substr(item, 1, instr(item, ':') - 1)), trim(substr(item, instr(item, ':') + 1))
    FROM split WHERE instr(item, ':') > 0
)
INSERT OR IGNORE INTO vm_ports (vm_id, host_port, guest_port)
SELECT vm_id, CAST(h AS INTEGER), CAST(g AS INTEGER)
FROM pairs
WHERE h <> '' AND h NOT GLOB '*[^0-9]*' AND length(h) <= 5
  AND g <> '' AND g NOT GLOB '*[^0-9]*' AND length(g) <= 5
  AND CAST(h AS INTEGER) BETWEEN 1 AND 65535
  AND CAST(g AS INTEGER) BETWEEN 1 AND 65535;

ALTER TABLE vms DROP COLUMN publish;
