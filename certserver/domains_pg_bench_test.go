package certserver

import (
	"context"
	"log/slog"
	"testing"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/pgtest"
	"github.com/certserver/certserver/store/postgres"
)

// BenchmarkBulkAdd500kPostgres is BenchmarkBulkAdd500k against a fleet's
// PostgreSQL store: a cluster of its own (store/pgtest, fsync off), a new
// database for each store. Target: 500,000 names in 10 s.
//
//	go test -run '^$' -bench BenchmarkBulkAdd500kPostgres -benchtime 1x ./certserver/
func BenchmarkBulkAdd500kPostgres(b *testing.B) {
	cluster := pgtest.Start(b)
	benchBulkAdd(b, func(b *testing.B) store.Store {
		st, err := postgres.Open(context.Background(), postgres.Options{URL: cluster.NewDatabase(b), Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		return st
	})
}
