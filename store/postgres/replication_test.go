package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/pgtest"
	"github.com/certserver/certserver/store/postgres"
	"github.com/certserver/certserver/store/storetest"
)

// wait bounds every wait on a real process or a notification: long, since
// the machine may be loaded; a test only reaches it when it fails.
const wait = 2 * time.Minute

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return c
}

// cert returns a valid record serving names, ID names[0], with fake PEM.
func cert(now time.Time, names ...string) *store.Certificate {
	return &store.Certificate{
		ID:        names[0],
		Names:     slices.Clone(names),
		ChainPEM:  []byte("-----BEGIN CERTIFICATE-----\n" + names[0] + "\n-----END CERTIFICATE-----\n"),
		KeyPEM:    []byte("-----BEGIN PRIVATE KEY-----\nsecret of " + names[0] + "\n-----END PRIVATE KEY-----\n"),
		NotBefore: now.Add(-time.Hour),
		NotAfter:  now.Add(90 * 24 * time.Hour),
		Issuer:    "CN=test CA",
		Serial:    "0a1b",
		KeyType:   store.KeyECDSAP256,
		Source:    store.SourceACME,
		StoredAt:  now,
	}
}

// change is what a test compares of a store.Change.
type change struct {
	kind store.ChangeKind
	key  string // certificate ID or token
	what string // the certificate's serial, the token's key authorization
}

func summarize(cs []store.Change) []change {
	var out []change
	for _, c := range cs {
		x := change{kind: c.Kind}
		switch c.Kind {
		case store.ChangePutCertificate:
			x.key, x.what = c.Certificate.ID, c.Certificate.Serial
		case store.ChangeDeleteCertificate:
			x.key = c.ID
		case store.ChangePutChallenge:
			x.key, x.what = c.Token, c.KeyAuth
		case store.ChangeDeleteChallenge:
			x.key = c.Token
		}
		out = append(out, x)
	}
	return out
}

// mustChanges returns ChangesAfter(after, limit), checking that versions
// rise and are above after.
func mustChanges(t *testing.T, s *postgres.Store, after uint64, limit int) []store.Change {
	t.Helper()
	cs, err := s.ChangesAfter(ctx(t), after, limit)
	if err != nil {
		t.Fatalf("ChangesAfter(%d, %d): %v", after, limit, err)
	}
	last := after
	for _, c := range cs {
		if c.Version <= last {
			t.Fatalf("ChangesAfter(%d): version %d after %d", after, c.Version, last)
		}
		last = c.Version
	}
	return cs
}

func TestChangesAfterReturnsTheLatestChangeOfEachRecordInVersionOrder(t *testing.T) {
	clock := storetest.NewClock()
	s := open(t, clock.Now)
	c := ctx(t)
	now := clock.Now()

	if v, err := s.LatestVersion(c); err != nil || v != 0 {
		t.Fatalf("LatestVersion of an empty store = %d, %v; want 0", v, err)
	}
	a1 := cert(now, "a.example.com")
	a1.Serial = "a1"
	b := cert(now, "b.example.com")
	for _, step := range []func() error{
		func() error { return s.PutCertificate(c, a1) },
		func() error { return s.PutCertificate(c, b) },
		func() error { return s.PutChallenge(c, "tok1", "tok1.auth1", now.Add(time.Hour)) },
		func() error { return s.PutChallenge(c, "tok2", "tok2.auth", now.Add(time.Hour)) },
		func() error { a2 := cert(now, "a.example.com"); a2.Serial = "a2"; return s.PutCertificate(c, a2) },
		func() error { return s.DeleteCertificate(c, "b.example.com") },
		func() error { return s.PutChallenge(c, "tok1", "tok1.auth2", now.Add(time.Hour)) },
		func() error { return s.DeleteChallenge(c, "tok2") },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	// Writes that change nothing a local copy holds take no version.
	if err := s.DeleteChallenge(c, "missing"); err != nil {
		t.Fatal(err)
	}
	if err := s.PutDomain(c, &store.Domain{Name: "a.example.com", State: store.StatePending}); err != nil {
		t.Fatal(err)
	}

	all := mustChanges(t, s, 0, 100)
	want := []change{
		{store.ChangePutCertificate, "a.example.com", "a2"},
		{store.ChangeDeleteCertificate, "b.example.com", ""},
		{store.ChangePutChallenge, "tok1", "tok1.auth2"},
		{store.ChangeDeleteChallenge, "tok2", ""},
	}
	if got := summarize(all); !reflect.DeepEqual(got, want) {
		t.Fatalf("ChangesAfter(0) = %+v\nwant %+v", got, want)
	}
	latest, err := s.LatestVersion(c)
	if err != nil {
		t.Fatal(err)
	}
	if latest != all[len(all)-1].Version {
		t.Errorf("LatestVersion = %d, want the last change's %d", latest, all[len(all)-1].Version)
	}
	// The put carries the whole record, key as given.
	got := all[0].Certificate
	if !reflect.DeepEqual(got.Names, []string{"a.example.com"}) || string(got.KeyPEM) != string(a1.KeyPEM) || !got.NotAfter.Equal(a1.NotAfter) {
		t.Errorf("the put carries %+v", got)
	}
	if exp := all[2].Expires; !exp.Equal(now.Add(time.Hour)) {
		t.Errorf("the token's expiry is %v, want %v", exp, now.Add(time.Hour))
	}

	// Paging: one at a time from each version gives the same list.
	var paged []store.Change
	for after := uint64(0); ; {
		cs := mustChanges(t, s, after, 1)
		if len(cs) == 0 {
			break
		}
		paged = append(paged, cs...)
		after = cs[0].Version
	}
	if !reflect.DeepEqual(summarize(paged), want) {
		t.Errorf("paged one at a time: %+v, want %+v", summarize(paged), want)
	}
	if cs := mustChanges(t, s, latest, 100); len(cs) != 0 {
		t.Errorf("ChangesAfter(latest) = %+v, want none", summarize(cs))
	}
	if cs := mustChanges(t, s, 0, 0); len(cs) != 0 {
		t.Errorf("ChangesAfter with limit 0 = %+v, want none", summarize(cs))
	}

	// A record put again after its deletion loses its tombstone.
	if err := s.PutCertificate(c, cert(now, "b.example.com")); err != nil {
		t.Fatal(err)
	}
	cs := mustChanges(t, s, 0, 100)
	for _, x := range summarize(cs) {
		if x.kind == store.ChangeDeleteCertificate {
			t.Errorf("b.example.com is stored again, and still has a tombstone: %+v", summarize(cs))
		}
	}
}

func TestPutCertificatesTakesAVersionForEach(t *testing.T) {
	clock := storetest.NewClock()
	s := open(t, clock.Now)
	now := clock.Now()
	batch := []*store.Certificate{cert(now, "a.example.com"), cert(now, "b.example.com"), cert(now, "c.example.com")}
	if err := s.PutCertificates(ctx(t), batch); err != nil {
		t.Fatal(err)
	}
	cs := mustChanges(t, s, 0, 100)
	if len(cs) != 3 {
		t.Fatalf("ChangesAfter after a batch of 3: %+v", summarize(cs))
	}
	for i, c := range cs {
		if c.Certificate.ID != batch[i].ID {
			t.Errorf("change %d is %s, want %s (batch order)", i, c.Certificate.ID, batch[i].ID)
		}
	}
}

// TestVersionedWritesTakeTurns: a versioned write waits for the one in
// progress to commit before it takes its version, so that versions commit
// in order and a copy that applied version V never misses a lower one
// committed after it. (Waiting only at the end, with its version taken,
// a write could commit version 12 before another's 11.)
func TestVersionedWritesTakeTurns(t *testing.T) {
	clock := storetest.NewClock()
	url := pgtest.New(t)
	s := openURL(t, url, clock.Now)
	c := ctx(t)

	// Another writer holds the turn (as a slow PutCertificates would).
	conn, err := pgx.Connect(c, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(c, "SELECT 1 FROM replication_state FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	var held int64
	if err := tx.QueryRow(c, "SELECT nextval('change_version')").Scan(&held); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.PutCertificate(c, cert(clock.Now(), "a.example.com")) }()

	// The put must wait for the lock: poll until PostgreSQL shows it
	// waiting, and fail if it finishes first.
	for deadline := time.Now().Add(wait); ; {
		var waiting int
		if err := conn.QueryRow(c, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("PutCertificate returned (%v) while another versioned write held the turn", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("PutCertificate never waited for the turn")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Versions are not transactional: one taken shows at once.
	var last int64
	if err := conn.QueryRow(c, "SELECT last_value FROM change_version").Scan(&last); err != nil {
		t.Fatal(err)
	}
	if last != held {
		t.Errorf("the waiting write took version %d while version %d was not committed yet", last, held)
	}
	if err := tx.Commit(c); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestConcurrentWritersLoseNoVersion: a copy that follows ChangesAfter
// while many writers put certificates ends with every record at its
// latest version.
func TestConcurrentWritersLoseNoVersion(t *testing.T) {
	clock := storetest.NewClock()
	s := open(t, clock.Now)
	c := ctx(t)
	const writers, each = 4, 25
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				crt := cert(clock.Now(), fmt.Sprintf("n%d.w%d.example.com", i%5, w))
				crt.Serial = strconv.Itoa(i)
				if err := s.PutCertificate(c, crt); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	copyOf := map[string]string{} // ID -> serial, as a local copy applies them
	var applied uint64
	follow := func() {
		for {
			cs, err := s.ChangesAfter(c, applied, 7)
			if err != nil {
				t.Error(err)
				return
			}
			if len(cs) == 0 {
				return
			}
			for _, ch := range cs {
				copyOf[ch.Certificate.ID] = ch.Certificate.Serial
				applied = ch.Version
			}
		}
	}
	stop := make(chan struct{})
	followed := make(chan struct{})
	go func() {
		defer close(followed)
		for {
			select {
			case <-stop:
				return
			default:
				follow()
			}
		}
	}()
	wg.Wait()
	close(stop)
	<-followed
	follow()
	if len(copyOf) != writers*5 {
		t.Fatalf("the copy holds %d records, want %d", len(copyOf), writers*5)
	}
	for id, serial := range copyOf {
		got, err := s.GetCertificate(c, id)
		if err != nil {
			t.Fatal(err)
		}
		if got.Serial != serial {
			t.Errorf("%s: the copy has serial %s, the store %s", id, serial, got.Serial)
		}
	}
}

func TestTombstonesArePrunedBehindTheHosts(t *testing.T) {
	clock := storetest.NewClock()
	s := open(t, clock.Now)
	c := ctx(t)
	now := clock.Now()
	for _, id := range []string{"a.example.com", "b.example.com", "c.example.com"} {
		if err := s.PutCertificate(c, cert(now, id)); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"a.example.com", "b.example.com"} {
		if err := s.DeleteCertificate(c, id); err != nil {
			t.Fatal(err)
		}
	}
	cs := mustChanges(t, s, 0, 100)
	if len(cs) != 3 {
		t.Fatalf("changes: %+v", summarize(cs))
	}
	delA, delB := cs[1].Version, cs[2].Version

	// One host applied the first deletion, the other everything: only
	// the first tombstone may go.
	report := func(name string, applied uint64) {
		t.Helper()
		if err := s.ReportHost(c, store.Host{Name: name, Applied: applied, Renews: name == "h1", InFlight: len(name), LagSeconds: 1.5}); err != nil {
			t.Fatal(err)
		}
	}
	report("h1", delA)
	report("h2", delB)
	cs = mustChanges(t, s, 0, 100)
	if got, want := summarize(cs), []change{
		{store.ChangePutCertificate, "c.example.com", "0a1b"},
		{store.ChangeDeleteCertificate, "b.example.com", ""},
	}; !reflect.DeepEqual(got, want) {
		t.Fatalf("after h1 applied %d: %+v, want %+v", delA, got, want)
	}
	if _, err := s.ChangesAfter(c, delA, 100); err != nil {
		t.Fatalf("ChangesAfter(%d), the horizon itself: %v", delA, err)
	}
	if _, err := s.ChangesAfter(c, delA-1, 100); !errors.Is(err, postgres.ErrPruned) {
		t.Fatalf("ChangesAfter(%d), below the pruned horizon: %v, want ErrPruned", delA-1, err)
	}

	// h1 goes silent past the retention: it holds nothing back any more.
	clock.Advance(31 * 24 * time.Hour)
	report("h2", delB)
	if cs := mustChanges(t, s, 0, 100); len(cs) != 1 || cs[0].Kind != store.ChangePutCertificate {
		t.Fatalf("after h1's retention: %+v, want c.example.com's put alone", summarize(cs))
	}

	hosts, err := s.Hosts(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(hosts) != 2 || hosts[0].Name != "h1" || hosts[1].Name != "h2" ||
		hosts[0].Applied != delA || !hosts[0].Renews || hosts[1].Renews ||
		!hosts[0].SeenAt.Equal(now) || !hosts[1].SeenAt.Equal(clock.Now()) ||
		hosts[0].InFlight != 2 || hosts[1].LagSeconds != 1.5 {
		t.Errorf("Hosts = %+v", hosts)
	}
	if err := s.ReportHost(c, store.Host{}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("ReportHost without a name: %v, want ErrInvalid", err)
	}
}

// listener runs Listen in the background and collects what it announces.
type listener struct {
	mu       sync.Mutex
	versions []uint64
	done     chan struct{} // closed when Listen returned err
	err      error
}

func listen(t *testing.T, s *postgres.Store) *listener {
	c, cancel := context.WithCancel(context.Background())
	l := &listener{done: make(chan struct{})}
	go func() {
		defer close(l.done)
		l.err = s.Listen(c, func(v uint64) {
			l.mu.Lock()
			l.versions = append(l.versions, v)
			l.mu.Unlock()
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-l.done
	})
	return l
}

// waitFor polls until the listener has heard version v.
func (l *listener) waitFor(t *testing.T, v uint64) {
	t.Helper()
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		l.mu.Lock()
		heard := slices.Contains(l.versions, v)
		l.mu.Unlock()
		if heard {
			return
		}
		select {
		case <-l.done:
			t.Fatalf("Listen returned (%v) before version %d was announced", l.err, v)
		default:
		}
	}
	t.Fatalf("version %d never announced", v)
}

// listening waits until s has a session listening on its channel, since
// announcements made before it are lost.
func listening(t *testing.T, url string) {
	t.Helper()
	conn, err := pgx.Connect(ctx(t), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var n int
		if err := conn.QueryRow(ctx(t), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND query ILIKE 'LISTEN%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
	}
	t.Fatal("nobody listens")
}

func TestListenAnnouncesEachVersionAndNothingElse(t *testing.T) {
	clock := storetest.NewClock()
	url := pgtest.New(t)
	s := openURL(t, url, clock.Now)
	c := ctx(t)
	l := listen(t, s)
	listening(t, url)

	// A session of our own sees what goes through the notification
	// queue: the version, never the record.
	raw, err := pgx.Connect(c, url)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close(context.Background())
	if _, err := raw.Exec(c, "LISTEN "+postgres.Channel); err != nil {
		t.Fatal(err)
	}

	if err := s.PutCertificate(c, cert(clock.Now(), "a.example.com")); err != nil {
		t.Fatal(err)
	}
	v1, _ := s.LatestVersion(c)
	l.waitFor(t, v1)
	n, err := raw.WaitForNotification(c)
	if err != nil {
		t.Fatal(err)
	}
	if n.Payload != strconv.FormatUint(v1, 10) {
		t.Errorf("notification payload %q, want the version %d alone", n.Payload, v1)
	}
	if err := s.PutChallenge(c, "tok", "tok.auth", clock.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	v2, _ := s.LatestVersion(c)
	l.waitFor(t, v2)
	if err := s.DeleteCertificate(c, "a.example.com"); err != nil {
		t.Fatal(err)
	}
	v3, _ := s.LatestVersion(c)
	l.waitFor(t, v3)
	if !(v1 < v2 && v2 < v3) {
		t.Errorf("versions %d, %d, %d do not rise", v1, v2, v3)
	}
}

func TestListenReturnsWhenTheServerGoesAndWorksAgainAfter(t *testing.T) {
	cluster := pgtest.Start(t)
	url := cluster.NewDatabase(t)
	clock := storetest.NewClock()
	s := openURL(t, url, clock.Now)
	l := listen(t, s)
	listening(t, url)

	cluster.Stop(t)
	select {
	case <-l.done:
		if !errors.Is(l.err, store.ErrUnavailable) {
			t.Errorf("Listen returned %v, want ErrUnavailable", l.err)
		}
	case <-time.After(wait):
		t.Fatal("Listen did not return when the server stopped")
	}
	// While the server is down, Listen fails at once.
	if err := s.Listen(ctx(t), func(uint64) {}); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Listen with the server down: %v, want ErrUnavailable", err)
	}

	cluster.Restart(t)
	l2 := listen(t, s)
	listening(t, url)
	c := ctx(t)
	if err := s.PutCertificate(c, cert(clock.Now(), "a.example.com")); err != nil {
		t.Fatal(err)
	}
	v, _ := s.LatestVersion(c)
	l2.waitFor(t, v)
}

func TestListenReturnsWhenItsContextEnds(t *testing.T) {
	s := open(t, time.Now)
	c, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Listen(c, func(uint64) {}) }()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Listen returned %v, want context.Canceled", err)
		}
	case <-time.After(wait):
		t.Fatal("Listen did not return when its context ended")
	}
}
