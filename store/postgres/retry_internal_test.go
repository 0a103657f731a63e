package postgres

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/certserver/certserver/store"
)

// A transaction whose COMMIT lost its answer may have been made: it is
// tried once, and its error says both that the database is unavailable
// and that the write may or may not have been made.
func TestRetryNeverRepeatsACommit(t *testing.T) {
	s := &Store{where: "127.0.0.1:5432/certserver"}
	calls := 0
	err := s.retry(context.Background(), func() error {
		calls++
		return final{err: io.ErrUnexpectedEOF, commit: true}
	})
	if calls != 1 {
		t.Errorf("a failed commit was tried %d times, want 1", calls)
	}
	if !errors.Is(err, store.ErrUnavailable) || !errors.Is(err, store.ErrUncertain) {
		t.Errorf("error = %v, want it to wrap store.ErrUnavailable and store.ErrUncertain", err)
	}

}

// A function marked final that lost its connection (ScanCertificates
// after handing out records) is tried once too; its error says the
// database is unavailable, and nothing of a write that may have been
// made.
func TestRetryNeverRepeatsAFinal(t *testing.T) {
	s := &Store{where: "127.0.0.1:5432/certserver"}
	calls := 0
	err := s.retry(context.Background(), func() error {
		calls++
		return final{err: io.ErrUnexpectedEOF}
	})
	if calls != 1 {
		t.Errorf("a final error was tried %d times, want 1", calls)
	}
	if !errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrUncertain) {
		t.Errorf("error = %v, want it to wrap store.ErrUnavailable and not store.ErrUncertain", err)
	}
	if strings.Contains(err.Error(), "commit") {
		t.Errorf("error = %v, want no word of a commit", err)
	}
}
