-- The installation's identity: exactly one row, written when the schema is created.
CREATE TABLE instance (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    instance_id TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

INSERT INTO instance (id, instance_id) VALUES (1, lower(hex(randomblob(16))));
