package postgres

// ScanStatement is scanStatement, for the test that finds the scan's
// backend in pg_stat_activity.
const ScanStatement = scanStatement
