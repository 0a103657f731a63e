-- certserver's fleet store, schema version 4: no change. The number was
-- set aside for the fleet's shared ACME account and rate-limit budget,
-- which need none: the account is a row of accounts and the budget the
-- rows of rate_buckets (version 1), updated under advisory locks. The file
-- keeps the numbering without a gap, which the migrations require.
SELECT 1;
