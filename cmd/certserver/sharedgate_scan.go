package main

import (
	"context"

	"github.com/certserver/certserver/store"
)

// The metrics inventory of a fleet host reads the fleet's database
// through the gate (serve): it finds the database's one-pass scan here.
var _ store.CertificateScanner = (*sharedGate)(nil)

// ScanCertificates implements store.CertificateScanner.
func (g *sharedGate) ScanCertificates(ctx context.Context, fn func(*store.Certificate) error) error {
	db, err := g.get()
	if err != nil {
		return err
	}
	return db.ScanCertificates(ctx, fn)
}
