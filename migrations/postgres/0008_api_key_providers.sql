-- API keys with the `connections:use` scope may be limited to some providers: their ids,
-- space-separated. NULL means every provider (and is what keys made before this have).
ALTER TABLE api_keys ADD COLUMN providers TEXT;
