package certserver

import (
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/certserver/certserver/store"
)

// newTestStore opens a real Badger store in a fresh temporary directory and
// closes it when the test ends. Commits are not synced: the tests are not
// about surviving a power cut.
func newTestStore(t testing.TB) store.Store {
	t.Helper()
	st, err := store.OpenBadger(filepath.Join(t.TempDir(), "store"), store.BadgerOptions{
		Logger:     slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
		NoSync:     true,
		GCInterval: -1,
	})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return st
}
