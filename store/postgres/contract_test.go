package postgres_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/pgtest"
	"github.com/certserver/certserver/store/postgres"
	"github.com/certserver/certserver/store/storetest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// open opens a store on a new database of the shared cluster, closed when
// t ends.
func open(t testing.TB, clock func() time.Time) *postgres.Store {
	t.Helper()
	return openURL(t, pgtest.New(t), clock)
}

// openURL opens a store on url, closed when t ends.
func openURL(t testing.TB, url string, clock func() time.Time) *postgres.Store {
	t.Helper()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := postgres.Open(context.Background(), postgres.Options{URL: url, Logger: log, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestContract(t *testing.T) {
	clock := storetest.NewClock()
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, clock.Now)
	}, storetest.Options{Clock: clock})
}
