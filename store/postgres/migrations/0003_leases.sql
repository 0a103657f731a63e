-- certserver's fleet store, schema version 3: leases, so that every host
-- that renews shares the fleet's due names (store.Leaser).
--
-- A lease is one host's claim on one managed name until expires. Every
-- claim takes the next value of lease_token, the lease's fencing token:
-- a write made under a lease (store.WithLease) first takes a share lock
-- on the name's row here and checks that the token is still the one it
-- holds, so a host whose lease another host has claimed since writes
-- nothing. A row stays when its lease expires (the next claim replaces
-- it) and goes when its holder releases it.
CREATE SEQUENCE lease_token AS bigint MINVALUE 1;

CREATE TABLE leases (
	name    text COLLATE "C" PRIMARY KEY,
	host    text COLLATE "C" NOT NULL,
	token   bigint NOT NULL,
	expires timestamptz NOT NULL
);
