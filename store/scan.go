package store

import "context"

// CertificateScanner is implemented by a Store that can read every
// certificate record in one pass, in the order it keeps them, which is
// cheaper than ListCertificates page by page when the order does not
// matter (the metrics inventory, certserver.Metrics). It is an optional
// ability, found with As; Badger and PostgreSQL (store/postgres) have
// it. It hands out no private key or chain, so a decorator that seals
// keys (store/sealed) has nothing to do to what it returns, and finding
// it below one is right.
type CertificateScanner interface {
	// ScanCertificates calls fn with every certificate record of one
	// snapshot of the store, each exactly once, in no particular order,
	// with every field but ChainPEM and KeyPEM, which are nil. fn may
	// keep the Certificate it is given. fn returning an error stops the
	// scan, which returns an error wrapping it; a record that does not
	// decode stops it with an error naming the record. It checks ctx as
	// it goes, and stops with an error wrapping ctx's once ctx is done;
	// a context already done stops it before fn is called.
	//
	// A scan that fails partway has handed fn an incomplete set of
	// records, and is not started again: a caller that needs every
	// record discards what it got and scans again.
	ScanCertificates(ctx context.Context, fn func(*Certificate) error) error
}
