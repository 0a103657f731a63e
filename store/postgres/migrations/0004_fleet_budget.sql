-- certserver's fleet store, schema version 4: the fleet's one rate-limit
-- budget per ACME account. The buckets the hosts saved each for their own
-- Limiter (rate_buckets, by account scope) are now the fleet's shared
-- buckets: every host's Limiter takes them atomically, under transaction
-- advisory locks of class 'rbkt', one per bucket (store.RateBucketUpdater),
-- and the fleet's one registration of an account runs under a session
-- advisory lock of class 'acct' (store.AccountLocker). The rows keep their
-- meaning, so a fleet upgraded from per-host buckets starts from what it
-- spent: no table changes, only what its columns now mean.
COMMENT ON TABLE rate_buckets IS
	'Rate-limit buckets of each ACME account (scope "account:<id>"), shared by every host of the fleet: a missing row is a full bucket.';
COMMENT ON COLUMN rate_buckets.full_ns IS
	'The bucket''s GCRA theoretical arrival time: when it is full again, in nanoseconds since the Unix epoch.';
