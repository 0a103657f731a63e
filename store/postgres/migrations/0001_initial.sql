-- certserver's fleet store, schema version 1.
--
-- Names and IDs are compared byte for byte (COLLATE "C"), as Badger does,
-- whatever the database's own collation: list order and the due index's
-- ties follow it. Times are kept to the microsecond (timestamptz), but
-- those of internal bookkeeping (*_ns: Unix nanoseconds); accounts and a
-- certificate's details (info) are JSON, with times to the nanosecond.

-- Replication: every write of a certificate record or a challenge token
-- takes the next value of change_version, its version. Versioned writes
-- take turns (they lock the one row of replication_state first), so they
-- commit in version order and a reader that saw version V has seen every
-- version below it. latest_version is the newest committed version;
-- pruned_through the highest version whose tombstones may be gone.
CREATE SEQUENCE change_version AS bigint MINVALUE 1;

CREATE TABLE replication_state (
	only_row       boolean PRIMARY KEY DEFAULT true CHECK (only_row),
	latest_version bigint NOT NULL DEFAULT 0,
	pruned_through bigint NOT NULL DEFAULT 0
);
INSERT INTO replication_state DEFAULT VALUES;

-- Certificates: the record (chain, key as given, the other fields in
-- info) and the version of its last write.
CREATE TABLE certificates (
	id        text COLLATE "C" PRIMARY KEY,
	names     text[] NOT NULL,
	chain_pem bytea NOT NULL,
	key_pem   bytea NOT NULL,
	info      jsonb NOT NULL,
	version   bigint NOT NULL
);
CREATE INDEX certificates_version ON certificates (version);

-- Claims: every certificate that lists a name, with when it was stored
-- and when it expires, so that a name whose certificate goes away falls
-- back to the newest unexpired one that still lists it.
CREATE TABLE name_claims (
	name         text COLLATE "C" NOT NULL,
	cert_id      text COLLATE "C" NOT NULL REFERENCES certificates (id) ON DELETE CASCADE,
	stored_ns    bigint NOT NULL,
	not_after_ns bigint NOT NULL,
	PRIMARY KEY (name, cert_id)
);
CREATE INDEX name_claims_cert_id ON name_claims (cert_id);

-- Links: the certificate that serves each name (what a lookup reads).
CREATE TABLE name_links (
	name    text COLLATE "C" PRIMARY KEY,
	cert_id text COLLATE "C" NOT NULL REFERENCES certificates (id)
);
CREATE INDEX name_links_cert_id ON name_links (cert_id);

-- HTTP-01 challenge tokens.
CREATE TABLE challenges (
	token      text COLLATE "C" PRIMARY KEY,
	key_auth   text NOT NULL,
	expires_ns bigint NOT NULL,
	version    bigint NOT NULL
);
CREATE INDEX challenges_version ON challenges (version);

-- Tombstones: the deletion of a certificate record or a token, with its
-- version, kept until every host of the fleet has applied it.
CREATE TABLE tombstones (
	kind       text NOT NULL CHECK (kind IN ('certificate', 'challenge')),
	key        text COLLATE "C" NOT NULL,
	version    bigint NOT NULL,
	deleted_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (kind, key)
);
CREATE INDEX tombstones_version ON tombstones (version);

-- Managed names: one column per field of store.Domain; a zero time or
-- an empty list is NULL. next_attempt is the name's place in the due
-- index (NULL: none). attempts is JSON (store.Attempt, times to the
-- nanosecond).
CREATE TABLE domains (
	name          text COLLATE "C" PRIMARY KEY,
	state         text NOT NULL,
	profile       text NOT NULL,
	cert_id       text NOT NULL,
	next_attempt  timestamptz,
	failures      integer NOT NULL,
	last_error    text NOT NULL,
	failing_since timestamptz,
	source        text NOT NULL,
	added_at      timestamptz NOT NULL,
	updated_at    timestamptz NOT NULL,
	attempts      jsonb,
	extra_names   text[],
	managed_with  text NOT NULL
);
CREATE INDEX domains_due ON domains (next_attempt, name) WHERE next_attempt IS NOT NULL;

-- ACME accounts.
CREATE TABLE accounts (
	id     text COLLATE "C" PRIMARY KEY,
	record jsonb NOT NULL
);

-- Saved rate-limit buckets, each until it is full again.
CREATE TABLE rate_buckets (
	scope   text COLLATE "C" NOT NULL,
	"limit" text COLLATE "C" NOT NULL,
	key     text COLLATE "C" NOT NULL,
	full_ns bigint NOT NULL,
	PRIMARY KEY (scope, "limit", key)
);

-- The hosts of the fleet, as they report themselves.
CREATE TABLE hosts (
	name    text COLLATE "C" PRIMARY KEY,
	applied bigint NOT NULL,
	seen_at timestamptz NOT NULL,
	renews  boolean NOT NULL
);

-- certserver_unlink removes certificate p_id's claim on p_name and, when
-- p_name is linked to p_id, re-links it to the newest other claim whose
-- certificate has not expired at p_now_ns (ties: the greatest ID), or
-- removes the link.
CREATE FUNCTION certserver_unlink(p_name text, p_id text, p_now_ns bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
	best text;
BEGIN
	DELETE FROM name_claims WHERE name = p_name AND cert_id = p_id;
	PERFORM 1 FROM name_links WHERE name = p_name AND cert_id = p_id;
	IF NOT FOUND THEN
		RETURN;
	END IF;
	SELECT cert_id INTO best FROM name_claims
	 WHERE name = p_name AND cert_id <> p_id AND not_after_ns >= p_now_ns
	 ORDER BY stored_ns DESC, cert_id DESC
	 LIMIT 1;
	IF best IS NULL THEN
		DELETE FROM name_links WHERE name = p_name;
	ELSE
		UPDATE name_links SET cert_id = best WHERE name = p_name;
	END IF;
END
$$;

-- certserver_put_certificate stores a certificate record under the next
-- version and returns the version: the record, a claim and a link for
-- each of its names (the newest write wins a name), and it unlinks the
-- names the record it replaces held and it does not.
CREATE FUNCTION certserver_put_certificate(p_id text, p_names text[], p_chain bytea, p_key bytea,
	p_info jsonb, p_stored_ns bigint, p_not_after_ns bigint, p_now_ns bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
	v         bigint := nextval('change_version');
	old_names text[];
	n         text;
BEGIN
	SELECT names INTO old_names FROM certificates WHERE id = p_id FOR UPDATE;
	INSERT INTO certificates (id, names, chain_pem, key_pem, info, version)
	VALUES (p_id, p_names, p_chain, p_key, p_info, v)
	ON CONFLICT (id) DO UPDATE SET names = EXCLUDED.names, chain_pem = EXCLUDED.chain_pem,
		key_pem = EXCLUDED.key_pem, info = EXCLUDED.info, version = EXCLUDED.version;
	IF old_names IS NOT NULL THEN
		FOREACH n IN ARRAY old_names LOOP
			IF NOT n = ANY (p_names) THEN
				PERFORM certserver_unlink(n, p_id, p_now_ns);
			END IF;
		END LOOP;
	END IF;
	INSERT INTO name_claims (name, cert_id, stored_ns, not_after_ns)
	SELECT DISTINCT unnest(p_names), p_id, p_stored_ns, p_not_after_ns
	ON CONFLICT (name, cert_id) DO UPDATE SET stored_ns = EXCLUDED.stored_ns, not_after_ns = EXCLUDED.not_after_ns;
	INSERT INTO name_links (name, cert_id)
	SELECT DISTINCT unnest(p_names), p_id
	ON CONFLICT (name) DO UPDATE SET cert_id = EXCLUDED.cert_id;
	DELETE FROM tombstones WHERE kind = 'certificate' AND key = p_id;
	RETURN v;
END
$$;

-- certserver_delete_certificate removes a certificate record, re-linking
-- or unlinking the names it served, leaves a tombstone under the next
-- version and returns the version; NULL when there was no such record.
CREATE FUNCTION certserver_delete_certificate(p_id text, p_now_ns bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
	old_names text[];
	n         text;
	v         bigint;
BEGIN
	SELECT names INTO old_names FROM certificates WHERE id = p_id FOR UPDATE;
	IF NOT FOUND THEN
		RETURN NULL;
	END IF;
	FOREACH n IN ARRAY old_names LOOP
		PERFORM certserver_unlink(n, p_id, p_now_ns);
	END LOOP;
	DELETE FROM certificates WHERE id = p_id;
	v := nextval('change_version');
	INSERT INTO tombstones (kind, key, version) VALUES ('certificate', p_id, v)
	ON CONFLICT (kind, key) DO UPDATE SET version = EXCLUDED.version, deleted_at = now();
	RETURN v;
END
$$;
