-- What a running VM needs beyond migration 2: why its VMM was chosen, the
-- run directory holding its sockets and logs, the host port forwarded to
-- its SSH server (user-mode networking), and the image's init override.
ALTER TABLE vms ADD COLUMN vmm_reason TEXT NOT NULL DEFAULT '';
ALTER TABLE vms ADD COLUMN run_dir TEXT NOT NULL DEFAULT '';
ALTER TABLE vms ADD COLUMN ssh_port INTEGER NOT NULL DEFAULT 0 CHECK (ssh_port >= 0 AND ssh_port < 65536);
ALTER TABLE vms ADD COLUMN agent_socket TEXT NOT NULL DEFAULT '';
