-- certserver's fleet store, schema version 7: the key pool ([keys]
-- reuse = "pool", store.KeyPool), one for the whole fleet. A row is one
-- slot of the pool of one key type: the key it holds (id: SHA-256 of the
-- public key, hex; key_pem: the private key, sealed with the fleet's
-- key-encryption key like every other private key) and when it was made.
-- A slot's key is replaced only where it still holds the key the writer
-- read (SwapPoolKey), so every host ends up with the same key.
CREATE TABLE key_pool (
	key_type   text COLLATE "C" NOT NULL,
	slot       integer NOT NULL CHECK (slot >= 0),
	id         text NOT NULL,
	key_pem    bytea NOT NULL,
	created_ns bigint NOT NULL,
	PRIMARY KEY (key_type, slot)
);
CREATE INDEX key_pool_id ON key_pool (id);
