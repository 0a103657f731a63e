-- certserver's fleet store, schema version 6: the challenge a managed
-- name's orders prove control with (store.Domain.Challenge): "http-01",
-- "dns-01", "tls-alpn-01", "auto", or '' for the configured default,
-- which every name written before this version takes.
ALTER TABLE domains ADD COLUMN challenge text NOT NULL DEFAULT '';
