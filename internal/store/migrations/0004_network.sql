-- Bridged networking: one IPv4 lease per VM (unique across VMs, so two
-- concurrent creates never share an address), and the ports a VM
-- publishes on the host ("HOSTPORT:GUESTPORT" pairs, comma-separated).
CREATE TABLE leases (
    vm_id      TEXT PRIMARY KEY NOT NULL REFERENCES vms (id) ON DELETE CASCADE,
    ip         TEXT NOT NULL UNIQUE CHECK (ip <> ''),
    created_at TEXT NOT NULL
) STRICT;

ALTER TABLE vms ADD COLUMN publish TEXT NOT NULL DEFAULT '';
ALTER TABLE vms ADD COLUMN network TEXT NOT NULL DEFAULT '';
