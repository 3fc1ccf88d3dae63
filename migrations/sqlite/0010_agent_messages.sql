-- Agents' replies. `sender_kind` says who spoke: 'user' (a person, or their script) or
-- 'agent' (a connection acting with an API key of the `agent` scope). `stream_id` is the
-- stream an agent's reply was streamed as (`agent:streaming_complete`); it is NULL for
-- every other message. Existing messages were all sent by users.

ALTER TABLE messages ADD COLUMN sender_kind TEXT NOT NULL DEFAULT 'user' CHECK (sender_kind IN ('user', 'agent'));
ALTER TABLE messages ADD COLUMN stream_id TEXT;
