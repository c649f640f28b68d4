-- Facts about the store itself, as key/value text. 'state_dir_id' ties the
-- store to its state dir: the same id is in <state_dir>/state-id, and a
-- daemon refuses to start when the two disagree.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL CHECK (key <> ''),
    value TEXT NOT NULL
) STRICT;
