-- The installation's identity: exactly one row, written when the schema is created.
CREATE TABLE instance (
    id SMALLINT PRIMARY KEY CHECK (id = 1),
    instance_id TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

INSERT INTO instance (id, instance_id) VALUES (1, replace(gen_random_uuid()::text, '-', ''));
