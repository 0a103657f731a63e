package renewer

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
)

// unreachableStore fails every call with store.ErrUnavailable while down
// is set, as a fleet's PostgreSQL store does while its database is down,
// and counts the reads of the due index (the dispatcher's claims and the
// rest's probes) and of domain records (a worker's first step).
type unreachableStore struct {
	store.Store
	down       atomic.Bool
	dueReads   atomic.Int64
	domainRead atomic.Int64
}

var errUnreachable = fmt.Errorf("%w: postgres db.internal:5432: connection refused", store.ErrUnavailable)

func (s *unreachableStore) Due(ctx context.Context, before time.Time, limit int) ([]store.DueEntry, error) {
	s.dueReads.Add(1)
	if s.down.Load() {
		return nil, errUnreachable
	}
	return s.Store.Due(ctx, before, limit)
}

func (s *unreachableStore) GetDomain(ctx context.Context, name string) (*store.Domain, error) {
	s.domainRead.Add(1)
	if s.down.Load() {
		return nil, errUnreachable
	}
	return s.Store.GetDomain(ctx, name)
}

func (s *unreachableStore) UpdateDomain(ctx context.Context, name string, fn func(*store.Domain) error) error {
	if s.down.Load() {
		return errUnreachable
	}
	return s.Store.UpdateDomain(ctx, name, fn)
}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestRestsWhileStoreUnavailable: while the store's database is down the
// renewer claims no name (not even one an operator asks for) and orders
// nothing, probing the store once per storeErrorPause; it says so once in
// the log, and once the database is back it resumes by itself, logs that
// once, and orders the names that waited.
func TestRestsWhileStoreUnavailable(t *testing.T) {
	st := &unreachableStore{Store: openStore(t)}
	clock := newFakeClock(time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC))
	addPending(t, st.Store, clock.Now(), "a.example.test", "b.example.test")
	st.down.Store(true)
	ca := newFakeCA("https://ca.test/dir", clock)
	var logged syncBuffer
	r, err := New(Config{Workers: 2, IdleWait: time.Hour, Now: clock.Now, CAs: []CA{{Issuer: ca}}},
		st, slog.New(slog.NewTextHandler(&logged, nil)))
	if err != nil {
		t.Fatal(err)
	}
	// The rest's waits pass at once on the fake clock, counted.
	var pauses atomic.Int64
	r.sleep = func(ctx context.Context, d time.Duration) error {
		if d == storeErrorPause {
			pauses.Add(1)
			clock.Advance(d)
			// Give the rest of the test its turn between probes.
			select {
			case <-time.After(time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
			return ctx.Err()
		}
		return sleep(ctx, d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()

	waitFor(t, 30*time.Second, "20 probes of the unavailable store", func() bool { return pauses.Load() >= 20 })
	r.Prioritize("a.example.test")
	probes := pauses.Load()
	waitFor(t, 30*time.Second, "20 more probes", func() bool { return pauses.Load() >= probes+20 })
	if n := st.domainRead.Load(); n > 0 {
		t.Errorf("a worker read %d domain records while the store was unavailable: a name was claimed", n)
	}
	if n := len(ca.orderList()); n != 0 {
		t.Fatalf("%d orders sent while the store was unavailable, want none", n)
	}
	if n := strings.Count(logged.String(), "database is unavailable"); n != 1 {
		t.Errorf("the rest was logged %d times, want once:\n%s", n, logged.String())
	}

	st.down.Store(false)
	waitFor(t, 30*time.Second, "both names ordered once the store is back", func() bool { return len(ca.orderList()) == 2 })
	if n := strings.Count(logged.String(), "answers again: claiming"); n != 1 {
		t.Errorf("the end of the rest was logged %d times, want once:\n%s", n, logged.String())
	}
}

// putFailingStore answers store.ErrUnavailable to the first failPuts
// certificate writes, as a fleet's PostgreSQL store does while its
// database is down, and counts every write.
type putFailingStore struct {
	store.Store
	failPuts atomic.Int64
	puts     atomic.Int64
}

func (s *putFailingStore) PutCertificate(ctx context.Context, c *store.Certificate) error {
	s.puts.Add(1)
	if s.failPuts.Add(-1) >= 0 {
		return errUnreachable
	}
	return s.Store.PutCertificate(ctx, c)
}

// TestIssuedCertificateKeptWhileStoreUnavailable: the CA issues, and then
// the store's database is unavailable for the first writes of the
// certificate. The renewer keeps the certificate and writes it again,
// pausing 1 s, 2 s, 4 s, ... (up to 30 s) between tries, until the store
// answers: the certificate is stored, and the CA saw exactly one order.
// The wait is logged once when it begins and once when it ends.
func TestIssuedCertificateKeptWhileStoreUnavailable(t *testing.T) {
	const failures = 7
	st := &putFailingStore{Store: openStore(t)}
	st.failPuts.Store(failures)
	clock := newFakeClock(time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC))
	addPending(t, st.Store, clock.Now(), "a.example.test")
	ca := newFakeCA("https://ca.test/dir", clock)
	var logged syncBuffer
	r, err := New(Config{Workers: 1, IdleWait: time.Hour, Now: clock.Now, CAs: []CA{{Issuer: ca}}},
		st, slog.New(slog.NewTextHandler(&logged, nil)))
	if err != nil {
		t.Fatal(err)
	}
	// Every wait passes at once on the fake clock; the pauses other than
	// the dispatcher's rest probes are kept, in order.
	var mu sync.Mutex
	var pauses []time.Duration
	r.sleep = func(ctx context.Context, d time.Duration) error {
		if d != storeErrorPause {
			mu.Lock()
			pauses = append(pauses, d)
			mu.Unlock()
		}
		clock.Advance(d)
		select {
		case <-time.After(time.Millisecond):
		case <-ctx.Done():
		}
		return ctx.Err()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()

	waitFor(t, 60*time.Second, "the name valid, or a second order", func() bool {
		d, err := st.Store.GetDomain(context.Background(), "a.example.test")
		return err == nil && d.State == store.StateValid || len(ca.orderList()) > 1
	})
	if n := len(ca.orderList()); n != 1 {
		t.Errorf("%d orders at the CA, want exactly 1", n)
	}
	if n := st.puts.Load(); n != failures+1 {
		t.Errorf("%d certificate writes, want %d (%d refused, then the one that succeeded)", n, failures+1, failures)
	}
	c, err := st.Store.LookupCertificate(context.Background(), "a.example.test")
	if err != nil {
		t.Fatalf("the issued certificate is not stored: %v", err)
	}
	if d := getDomain(t, st.Store, "a.example.test"); d.CertID != c.ID {
		t.Errorf("the name links certificate %q, want the stored %q", d.CertID, c.ID)
	}
	mu.Lock()
	got := fmt.Sprint(pauses)
	mu.Unlock()
	if want := fmt.Sprint([]time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}); got != want {
		t.Errorf("pauses between the writes: %s, want %s", got, want)
	}
	if n := strings.Count(logged.String(), "keeping it and writing it again"); n != 1 {
		t.Errorf("the wait was logged %d times when it began, want once:\n%s", n, logged.String())
	}
	if n := strings.Count(logged.String(), "is stored now that the database answers"); n != 1 {
		t.Errorf("the write was logged %d times when it succeeded, want once:\n%s", n, logged.String())
	}
}
