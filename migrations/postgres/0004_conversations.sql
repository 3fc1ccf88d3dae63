-- Conversations, their members and their messages. `last_seq` is the conversation's latest
-- message number: a sender takes the next one by incrementing it in the transaction that
-- inserts the message, which serialises senders of one conversation, so the numbers are
-- gapless and unique. A member's `ack_seq` is the delivery position its clients confirmed
-- (cumulative). Times are milliseconds since the Unix epoch (UTC) in both dialects.

CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    title TEXT,
    owner_id TEXT NOT NULL REFERENCES users (id),
    last_seq BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE conversation_members (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id),
    ack_seq BIGINT NOT NULL DEFAULT 0,
    joined_at BIGINT NOT NULL,
    -- A user's conversations, in id order, for listing them and for every membership check.
    PRIMARY KEY (user_id, conversation_id)
);
CREATE INDEX conversation_members_conversation_idx ON conversation_members (conversation_id);

CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    sender_id TEXT NOT NULL REFERENCES users (id),
    client_msg_id TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX messages_conversation_seq_key ON messages (conversation_id, seq);
CREATE UNIQUE INDEX messages_client_msg_id_key ON messages (conversation_id, sender_id, client_msg_id);
CREATE INDEX messages_created_at_idx ON messages (created_at);
