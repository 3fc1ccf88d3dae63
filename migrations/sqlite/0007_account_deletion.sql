-- A deleted account keeps its row as a tombstone, so that the messages it sent in other
-- people's conversations keep their sender: its email, password and every credential are
-- gone, it is disabled, and this says when it was deleted (milliseconds since the Unix epoch).
ALTER TABLE users ADD COLUMN deleted_at BIGINT;
