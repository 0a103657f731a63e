-- certserver's fleet store, schema version 5: the on-demand policy's
-- verdicts, shared by the fleet, and what each host reports of its work.
--
-- A verdict says whether a name nobody manages may be ordered because a
-- handshake asked for it (allowed, refused with a reason), until
-- expires_ns; a row in state 'checking' is a host's claim to check the
-- name now, which the other hosts wait for (store.Verdicts). Expired rows
-- are deleted when hosts report (ReportHost).
CREATE TABLE on_demand_verdicts (
	name       text COLLATE "C" PRIMARY KEY,
	state      text NOT NULL CHECK (state IN ('checking', 'allowed', 'refused')),
	reason     text NOT NULL DEFAULT '',
	host       text NOT NULL,
	expires_ns bigint NOT NULL
);
CREATE INDEX on_demand_verdicts_expires ON on_demand_verdicts (expires_ns);

-- in_flight: the orders the host's renewer had under way; lag_seconds:
-- how long the oldest change its copy had not applied had waited.
ALTER TABLE hosts ADD COLUMN in_flight integer NOT NULL DEFAULT 0;
ALTER TABLE hosts ADD COLUMN lag_seconds double precision NOT NULL DEFAULT 0;
