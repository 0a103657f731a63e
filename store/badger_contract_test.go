package store_test

import (
	"log/slog"
	"testing"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/storetest"
)

// TestBadgerContract runs the store contract suite against Badger.
func TestBadgerContract(t *testing.T) {
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
	}, storetest.Options{Clock: clock})
}
