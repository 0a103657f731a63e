package replica_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certserver/certserver/renewer/clocktest"
	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/replica"
)

// fakeSource is a ReplicationSource in memory: changes with versions 1 to
// n, an announcement the test sends through Listen, and a gate that holds
// ChangesAfter until the test opens it.
type fakeSource struct {
	mu       sync.Mutex
	changes  []store.Change
	listener func(uint64)
	gate     chan struct{} // ChangesAfter waits for it to be closed
	pulls    atomic.Int64
	hosts    []store.Host
	down     atomic.Bool // every call fails with store.ErrUnavailable
}

var errDown = fmt.Errorf("%w (postgres 127.0.0.1:1/fleet): connection refused", store.ErrUnavailable)

func newFakeSource() *fakeSource { return &fakeSource{gate: make(chan struct{})} }

// add appends a change for a new certificate and returns its version.
func (s *fakeSource) add(name string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := uint64(len(s.changes) + 1)
	s.changes = append(s.changes, store.Change{Version: v, Kind: store.ChangePutCertificate, Certificate: cert(name)})
	return v
}

// announce calls the follower's notify as NOTIFY would; false when no
// Listen runs.
func (s *fakeSource) announce(v uint64) bool {
	s.mu.Lock()
	l := s.listener
	s.mu.Unlock()
	if l == nil {
		return false
	}
	l(v)
	return true
}

func (s *fakeSource) ChangesAfter(ctx context.Context, after uint64, limit int) ([]store.Change, error) {
	s.pulls.Add(1)
	select {
	case <-s.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if after >= uint64(len(s.changes)) {
		return nil, nil
	}
	out := s.changes[after:]
	return append([]store.Change(nil), out[:min(limit, len(out))]...), nil
}

func (s *fakeSource) LatestVersion(context.Context) (uint64, error) {
	if s.down.Load() {
		return 0, errDown
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return uint64(len(s.changes)), nil
}

func (s *fakeSource) Listen(ctx context.Context, notify func(uint64)) error {
	if s.down.Load() {
		return errDown
	}
	s.mu.Lock()
	s.listener = notify
	s.mu.Unlock()
	<-ctx.Done()
	return ctx.Err()
}

func (s *fakeSource) ReportHost(_ context.Context, h store.Host) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hosts = append(s.hosts, h)
	return nil
}

func (s *fakeSource) Hosts(context.Context) ([]store.Host, error) { return nil, errors.New("not used") }

// A burst of 1,000 announcements while a pull runs is one more pull, not
// a thousand.
func TestFollowerCoalescesAnnouncements(t *testing.T) {
	src := newFakeSource()
	local := openBadger(t, t.TempDir())
	f := startFollower(t, replica.Config{Source: src, Replica: local, ReportInterval: time.Hour})
	waitFor(t, "the first pull waits at the gate, and Listen runs", func() bool {
		return src.pulls.Load() == 1 && src.announce(0)
	})
	for i := range 1000 {
		src.announce(src.add(fmt.Sprintf("burst%d.test", i)))
	}
	close(src.gate)
	waitFor(t, "the burst applied", func() bool { return f.Status().Applied == 1000 && f.Status().LagVersions == 0 })
	if n := src.pulls.Load(); n > 4 {
		t.Fatalf("%d pulls for a burst of 1,000 announcements, want at most 4", n)
	}
}

// A host reports itself before it starts copying, so that the source
// keeps, while it copies, the tombstones it will need; the report carries
// its renewer's orders in flight.
func TestFollowerReportsBeforeItCopies(t *testing.T) {
	src := newFakeSource()
	for i := range 10 {
		src.add(fmt.Sprintf("c%d.test", i))
	}
	local := openBadger(t, t.TempDir())
	f := startFollower(t, replica.Config{Source: src, Replica: local, ReportInterval: time.Hour, InFlight: func() int { return 3 }})
	waitFor(t, "the first pull waits at the gate", func() bool { return src.pulls.Load() == 1 })
	src.mu.Lock()
	hosts := slices.Clone(src.hosts)
	src.mu.Unlock()
	if len(hosts) == 0 || hosts[0].Applied != 0 || hosts[0].Name != "host-a" || hosts[0].InFlight != 3 {
		t.Fatalf("reports before the copy: %+v; want host-a at version 0, 3 orders in flight", hosts)
	}
	close(src.gate)
	waitFor(t, "the copy applied", func() bool { return f.Status().Applied == 10 })
}

// The lag is counted from when the oldest change not yet applied was
// first known, on the follower's clock.
func TestFollowerLagOnItsClock(t *testing.T) {
	src := newFakeSource()
	local := openBadger(t, t.TempDir())
	start := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	clock := clocktest.New(start)
	f := startFollower(t, replica.Config{Source: src, Replica: local, Clock: clock.Now, ReportInterval: time.Hour})
	waitFor(t, "Listen runs", func() bool { return src.announce(0) })
	src.announce(src.add("one.test"))
	clock.Advance(3 * time.Second)
	src.announce(src.add("two.test"))
	clock.Advance(2 * time.Second)
	st := f.Status()
	if st.Ready || st.Applied != 0 || st.Latest != 2 || st.LagVersions != 2 || st.Lag != 5*time.Second || st.LagSeconds != 5 {
		t.Fatalf("two changes known for 5 s and 2 s, none applied: %+v; want lag 2 versions, 5 s", st)
	}
	close(src.gate)
	waitFor(t, "both applied", func() bool { return f.Status().Applied == 2 })
	if st := f.Status(); !st.Ready || st.LagVersions != 0 || st.Lag != 0 || !st.DatabaseUp {
		t.Fatalf("after applying: %+v; want ready, up, no lag", st)
	}
	waitFor(t, "the host reported", func() bool {
		src.mu.Lock()
		defer src.mu.Unlock()
		n := len(src.hosts)
		return n > 0 && src.hosts[n-1].Applied == 2 && src.hosts[n-1].SeenAt.Equal(start.Add(5*time.Second))
	})
}

// A database unreachable at start: a copy that applied something before
// serves it (ready, database down); an empty one is not ready.
func TestFollowerUnreachableAtStart(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		desc      string
		copy      string // "synced": an earlier run completed a sync; "cut": it applied some and was stopped; "": empty
		wantReady bool
	}{
		{"a copy whose earlier run completed a sync", "synced", true},
		{"a copy whose first sync was cut short", "cut", false},
		{"an empty copy", "", false},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			src := newFakeSource()
			local := openBadger(t, t.TempDir())
			switch tc.copy {
			case "synced":
				// An earlier follower completes a sync of 7 changes.
				for i := range 7 {
					src.add(fmt.Sprintf("c%d.test", i))
				}
				close(src.gate)
				earlier := startFollower(t, replica.Config{Source: src, Replica: local})
				<-earlier.Ready()
				earlier.stop(t)
				if ok, err := local.Synced(ctx); err != nil || !ok {
					t.Fatalf("after a completed sync the copy is not marked synced: %v, %v", ok, err)
				}
			case "cut":
				// An earlier run applied the first changes of a join and
				// was stopped before it completed.
				if err := local.Apply(ctx, []store.Change{{Version: 7, Kind: store.ChangePutCertificate, Certificate: cert("old.test")}}); err != nil {
					t.Fatal(err)
				}
			}
			src.down.Store(true)
			logger, logs := newLogger(t)
			pulls := src.pulls.Load()
			f := startFollower(t, replica.Config{Source: src, Replica: local, Logger: logger})
			waitFor(t, "the status says down", func() bool { return !f.Status().DownSince.IsZero() })
			waitFor(t, "retries", func() bool {
				return src.pulls.Load() == pulls && logs.count("fleet: database unreachable at start") == 1
			})
			st := f.Status()
			if st.Ready != tc.wantReady || st.DatabaseUp || st.DownCause != errDown.Error() {
				t.Fatalf("status: %+v; want ready %v, database down with its cause", st, tc.wantReady)
			}
			if tc.copy != "" && st.Applied != 7 {
				t.Fatalf("the copy from before: applied %d, want 7", st.Applied)
			}
		})
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	for _, tc := range []struct {
		desc string
		cfg  replica.Config
	}{
		{"no source", replica.Config{Replica: &store.Badger{}, Host: "h"}},
		{"retry max below min", replica.Config{Source: newFakeSource(), Replica: &store.Badger{}, Host: "h", RetryMin: time.Minute, RetryMax: time.Second}},
		{"no host", replica.Config{Source: newFakeSource(), Replica: &store.Badger{}}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			tc.cfg.Logger, _ = newLogger(t)
			if _, err := replica.New(tc.cfg); err == nil {
				t.Fatal("New accepted it")
			}
		})
	}
}
