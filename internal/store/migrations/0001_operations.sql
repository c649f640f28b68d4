-- The schema version (one row) and long-running operations, which are kept so
-- a CLI that disconnects can re-attach to them.
CREATE TABLE schema_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL CHECK (version >= 0)
) STRICT;

CREATE TABLE operations (
    id          TEXT PRIMARY KEY NOT NULL CHECK (id <> ''),
    kind        TEXT NOT NULL CHECK (kind <> ''),
    target      TEXT NOT NULL DEFAULT '',
    phase       TEXT NOT NULL DEFAULT '',
    state       TEXT NOT NULL
                CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    done        INTEGER NOT NULL DEFAULT 0 CHECK (done >= 0),
    total       INTEGER NOT NULL DEFAULT 0 CHECK (total >= 0),
    unit        TEXT NOT NULL DEFAULT '' CHECK (unit IN ('', 'bytes', 'items')),
    error       TEXT NOT NULL DEFAULT '',
    -- Timestamps are UTC text of fixed width, so they sort as they compare.
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    finished_at TEXT -- NULL until the operation reaches a terminal state
) STRICT;

CREATE INDEX operations_by_created ON operations (created_at, id);
CREATE INDEX operations_by_state ON operations (state, created_at);
