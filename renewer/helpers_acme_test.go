package renewer

import (
	"bytes"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"

	"github.com/certserver/certserver/store"
)

// badgerStore opens a Badger store in the test's temporary directory.
func badgerStore(t *testing.T) *store.Badger {
	t.Helper()
	st, err := store.OpenBadger(filepath.Join(t.TempDir(), "db"), store.BadgerOptions{Logger: testLogger(t), NoSync: true})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// testLogger logs at debug level into a buffer that is printed when the
// test fails. Unlike t.Log it may be written after the test ended (a lego
// goroutine finishing late).
func testLogger(t *testing.T) *slog.Logger {
	buf := &lockedBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
