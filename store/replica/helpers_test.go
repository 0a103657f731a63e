package replica_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/pgtest"
	"github.com/certserver/certserver/store/postgres"
	"github.com/certserver/certserver/store/replica"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// waitBound is how long a test waits for a condition on real processes
// before it fails: generous, since the machine may be loaded.
const waitBound = 2 * time.Minute

// waitFor polls cond until it holds, failing t after waitBound with what.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitBound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", waitBound, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logBuffer is a logger's output that tests read while it is written.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// count returns how many lines hold s.
func (l *logBuffer) count(s string) int {
	n := 0
	for line := range strings.SplitSeq(l.String(), "\n") {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

// newLogger returns a logger writing to the test's output and to a
// buffer the test reads.
func newLogger(t testing.TB) (*slog.Logger, *logBuffer) {
	buf := &logBuffer{}
	return slog.New(slog.NewTextHandler(ioTee{t, buf}, nil)), buf
}

type ioTee struct {
	t   testing.TB
	buf *logBuffer
}

func (w ioTee) Write(p []byte) (int, error) {
	w.buf.Write(p)
	return w.t.Output().Write(p)
}

// openPostgres opens the store on url, closed when t ends.
func openPostgres(t testing.TB, url string) *postgres.Store {
	t.Helper()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := postgres.Open(context.Background(), postgres.Options{URL: url, Logger: log, ConnectTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// openBadger opens a local copy in dir; the caller closes it (a test
// that reopens one closes it itself), else it is closed when t ends.
func openBadger(t testing.TB, dir string) *store.Badger {
	t.Helper()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	b, err := store.OpenBadger(dir, store.BadgerOptions{Logger: log, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// follower is a running Follower with what stops it.
type follower struct {
	*replica.Follower
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error // what Run returned, once stopped
}

// stop cancels the follower's Run and waits for it to return.
func (f *follower) stop(t testing.TB) {
	t.Helper()
	f.once.Do(func() {
		f.cancel()
		f.err = <-f.done
	})
	if !errors.Is(f.err, context.Canceled) {
		t.Errorf("Run returned %v, want context.Canceled", f.err)
	}
}

// startFollower runs a Follower of cfg with quick pauses (cfg's own
// settings win) until t ends or stop.
func startFollower(t testing.TB, cfg replica.Config) *follower {
	t.Helper()
	if cfg.Host == "" {
		cfg.Host = "host-a"
	}
	if cfg.Logger == nil {
		cfg.Logger, _ = newLogger(t)
	}
	if cfg.RetryMin == 0 {
		cfg.RetryMin, cfg.RetryMax = 20*time.Millisecond, 200*time.Millisecond
	}
	if cfg.ReportInterval == 0 {
		cfg.ReportInterval = 200 * time.Millisecond
	}
	fl, err := replica.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &follower{Follower: fl, cancel: cancel, done: make(chan error, 1)}
	go func() { f.done <- fl.Run(ctx) }()
	t.Cleanup(func() { f.stop(t) })
	return f
}

// testKey and testChain stand in for PEM: the stores keep them as bytes.
var (
	testChain = []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	testKey   = []byte("-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n")
)

// cert returns a certificate record for names.
func cert(names ...string) *store.Certificate {
	now := time.Now()
	return &store.Certificate{
		ID: names[0], Names: names, ChainPEM: testChain, KeyPEM: testKey,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(90 * 24 * time.Hour),
		Issuer: "CN=Test CA", Serial: "0a", KeyType: store.KeyECDSAP256, Source: store.SourceImport,
	}
}

// certs returns n certificate records named prefix0.test to prefix(n-1).test.
func certs(prefix string, n int) []*store.Certificate {
	out := make([]*store.Certificate, n)
	for i := range out {
		out[i] = cert(fmt.Sprintf("%s%d.test", prefix, i))
	}
	return out
}

// putAll writes cs into s in batches.
func putAll(t testing.TB, s store.Store, cs []*store.Certificate) {
	t.Helper()
	for len(cs) > 0 {
		n := min(len(cs), 1000)
		if err := s.PutCertificates(context.Background(), cs[:n]); err != nil {
			t.Fatal(err)
		}
		cs = cs[n:]
	}
}

// served returns the ID of the certificate the store serves for name, ""
// for none.
func served(t testing.TB, s store.Store, name string) string {
	t.Helper()
	c, err := s.LookupCertificate(context.Background(), name)
	if errors.Is(err, store.ErrNotFound) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return c.ID
}

// countCerts returns how many certificate records s holds.
func countCerts(t testing.TB, s store.Store) int {
	t.Helper()
	n, after := 0, ""
	for {
		cs, err := s.ListCertificates(context.Background(), after, 5000)
		if err != nil {
			t.Fatal(err)
		}
		if len(cs) == 0 {
			return n
		}
		n += len(cs)
		after = cs[len(cs)-1].ID
	}
}

// inStep reports whether the follower has applied the source's latest
// version and knows of nothing it lacks.
func inStep(t testing.TB, f *follower, src store.ReplicationSource) bool {
	t.Helper()
	latest, err := src.LatestVersion(context.Background())
	if err != nil {
		return false
	}
	st := f.Status()
	return st.Ready && st.DatabaseUp && st.Applied == latest && st.LagVersions == 0
}
