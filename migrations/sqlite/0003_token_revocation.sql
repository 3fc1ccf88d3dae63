-- Access tokens issued before this time (milliseconds since the Unix epoch) are refused:
-- set by a password change and by disabling or re-enabling the account.
ALTER TABLE users ADD COLUMN tokens_valid_after BIGINT NOT NULL DEFAULT 0;
