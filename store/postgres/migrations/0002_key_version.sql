-- certserver's fleet store, schema version 2: a key rewrite has a version
-- of its own.
--
-- certificates.version stays the version of the record's last full write
-- (what orders the links of its names: the newest write wins a name);
-- key_version is the version of its last key rewrite (certserver keys
-- rotate), 0 for none. A key rewrite changes no link, so a local copy
-- applies it as a change of the key alone: were it to take the record's
-- version, every copy would apply it as a full write and link each name
-- of the record to it, whatever record PostgreSQL links.
ALTER TABLE certificates ADD COLUMN key_version bigint NOT NULL DEFAULT 0;

-- The rewrites a copy has not seen as part of a full write.
CREATE INDEX certificates_key_version ON certificates (key_version) WHERE key_version > version;
