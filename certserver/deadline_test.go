package certserver

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
)

func TestLookupContext(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	soon, cancelSoon := context.WithTimeout(context.Background(), time.Hour)
	defer cancelSoon()
	live, cancelLive := context.WithCancel(context.Background())
	defer cancelLive()
	for _, tc := range []struct {
		desc    string
		parent  context.Context
		d       time.Duration
		wantErr error
		// wantDeadline is how far from now the deadline must be, within a
		// minute.
		wantDeadline time.Duration
	}{
		{desc: "before the deadline", parent: context.Background(), d: 24 * time.Hour, wantDeadline: 24 * time.Hour},
		{desc: "past the deadline", parent: context.Background(), d: -time.Second, wantErr: context.DeadlineExceeded},
		{desc: "past the deadline, the parent live", parent: live, d: -time.Second, wantErr: context.DeadlineExceeded},
		{desc: "the parent canceled", parent: canceled, d: 24 * time.Hour, wantErr: context.Canceled, wantDeadline: 24 * time.Hour},
		{desc: "the parent's deadline is earlier", parent: soon, d: 24 * time.Hour, wantDeadline: time.Hour},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			ctx, release := withLookupDeadline(tc.parent, tc.d)
			defer release()
			if err := ctx.Err(); !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Errorf("Err() = %v, want %v", err, tc.wantErr)
			}
			if ctx.inner != nil {
				t.Error("a timer was started before anyone asked for Done")
			}
			// context.Cause gives Err when the parent holds no cause of
			// its own (Go 1.21 and later).
			if cause := context.Cause(ctx); !errors.Is(cause, tc.wantErr) || (cause == nil) != (tc.wantErr == nil) {
				t.Errorf("context.Cause = %v, want %v", cause, tc.wantErr)
			}
			if tc.wantDeadline != 0 {
				dl, ok := ctx.Deadline()
				if off := time.Until(dl) - tc.wantDeadline; !ok || off > time.Minute || off < -time.Minute {
					t.Errorf("Deadline() = %v, %v: want about %v from now", dl, ok, tc.wantDeadline)
				}
			}
			// Done closes when Err says the context is over, and only then.
			if tc.wantErr == nil {
				select {
				case <-ctx.Done():
					t.Error("Done closed before the deadline")
				default:
				}
			} else {
				select {
				case <-ctx.Done():
				case <-time.After(10 * time.Second):
					t.Error("Done not closed within 10s of the deadline or cancel")
				}
			}
			if err := ctx.Err(); !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Errorf("Err() after Done = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

// ctxStore records the context of every certificate lookup and, when
// wait is set, waits for it to be done before answering with its error.
type ctxStore struct {
	store.Store
	wait bool
	mu   sync.Mutex
	ctxs []context.Context
}

func (s *ctxStore) LookupCertificate(ctx context.Context, name string) (*store.Certificate, error) {
	s.mu.Lock()
	s.ctxs = append(s.ctxs, ctx)
	s.mu.Unlock()
	if s.wait {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return s.Store.LookupCertificate(ctx, name)
}

// TestCertEndpointLookupStartsNoTimer: a lookup that does not wait on its
// context (Badger's) costs no timer, and one that waits is still cut off
// at LookupTimeout and answered 500.
func TestCertEndpointLookupStartsNoTimer(t *testing.T) {
	st := &ctxStore{Store: newTestStore(t)}
	e := startCertEndpoint(t, CertEndpointConfig{Listen: "127.0.0.1:0"}, st)
	if resp, _ := rawRequest(t, e.Addrs()[0].String(), "GET", "/v1/certs/example.com"); resp.StatusCode != 404 {
		t.Fatalf("status %d, want 404", resp.StatusCode)
	}
	st.mu.Lock()
	ctxs := st.ctxs
	st.mu.Unlock()
	if len(ctxs) != 1 {
		t.Fatalf("%d lookups, want 1", len(ctxs))
	}
	lc, ok := ctxs[0].(*lookupContext)
	if !ok {
		t.Fatalf("the lookup got a %T, want a *lookupContext (no timer unless waited on)", ctxs[0])
	}
	if lc.inner != nil {
		t.Error("a timer was started for a lookup that never waited")
	}
	if _, ok := lc.Deadline(); !ok {
		t.Error("the lookup's context has no deadline")
	}

	slow := &ctxStore{Store: newTestStore(t), wait: true}
	e = startCertEndpoint(t, CertEndpointConfig{Listen: "127.0.0.1:0", LookupTimeout: 10 * time.Millisecond}, slow)
	if resp, _ := rawRequest(t, e.Addrs()[0].String(), "GET", "/v1/certs/example.com"); resp.StatusCode != 500 {
		t.Fatalf("a store waiting past LookupTimeout: status %d, want 500", resp.StatusCode)
	}
}
