package store_test

import (
	"log/slog"
	"os"
	"strconv"
	"testing"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/storetest"
)

// TestBadgerContract runs the store contract suite against Badger. The
// bulk case adds storetest.DefaultBulk names, or as many as
// CERTSERVER_STORE_BULK says (make bench: storetest.FullBulk).
func TestBadgerContract(t *testing.T) {
	bulk := 0
	if v := os.Getenv("CERTSERVER_STORE_BULK"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 4 {
			t.Fatalf("CERTSERVER_STORE_BULK=%q: want a number of names, at least 4", v)
		}
		bulk = n
	}
	clock := storetest.NewClock()
	storetest.Run(t, func(t *testing.T) store.Store {
		log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
		b, err := store.OpenBadger(t.TempDir(), store.BadgerOptions{Logger: log, Clock: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := b.Close(); err != nil {
				t.Error(err)
			}
		})
		return b
	}, storetest.Options{Clock: clock, Bulk: bulk})
}
