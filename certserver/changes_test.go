package certserver

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/sealed"
)

func TestChangesEndpoint(t *testing.T) {
	st := newTestStore(t)
	e := startCertEndpoint(t, CertEndpointConfig{Listen: "127.0.0.1:0"}, st)
	addr := e.Addrs()[0].String()
	ask := func(since string) (cursor string, lines []string) {
		t.Helper()
		resp, body := rawRequest(t, addr, "GET", "/v1/changes?since="+since)
		if resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != "no-store" {
			t.Fatalf("status %d, Cache-Control %q (body %q)", resp.StatusCode, resp.Header.Get("Cache-Control"), body)
		}
		lines = strings.Split(strings.TrimSuffix(body, "\n"), "\n")
		epoch, v, ok := strings.Cut(lines[0], " ")
		if !ok {
			t.Fatalf("first line %q is not EPOCH VERSION", lines[0])
		}
		return epoch + "." + v, lines[1:]
	}

	cur, lines := ask("")
	if len(lines) != 1 || lines[0] != "reset" {
		t.Fatalf("no cursor: %q, want reset", lines)
	}
	if _, lines := ask("nonsense"); len(lines) != 1 || lines[0] != "reset" {
		t.Fatalf("a malformed cursor: %q, want reset", lines)
	}
	wild := func(chain string) *store.Certificate {
		return &store.Certificate{ID: "*.wild.example.org", Names: []string{"*.wild.example.org", "wild.example.org"},
			ChainPEM: []byte(chain), KeyPEM: []byte("KEY wild"), NotAfter: time.Now().Add(time.Hour)}
	}
	putCert(t, st, wild("CHAIN wild"))
	next, lines := ask(cur)
	if next != cur || len(lines) != 0 {
		t.Fatalf("after a put of names nothing served: %s %q, want nothing at %s", next, lines, cur)
	}
	putCert(t, st, wild("CHAIN wild renewed"))
	next, lines = ask(cur)
	if strings.Join(lines, ",") != "*.wild.example.org,wild.example.org" {
		t.Fatalf("after a replacement: %q", lines)
	}
	if err := st.DeleteCertificate(context.Background(), "*.wild.example.org"); err != nil {
		t.Fatal(err)
	}
	if _, lines := ask(next); strings.Join(lines, ",") != "*.wild.example.org,wild.example.org" {
		t.Fatalf("after a delete: %q", lines)
	}
}

// TestChangesMarks: asked with marks=1, the feed marks "gone NAME" the
// listed host names no certificate serves at the time of the answer (the
// certificate endpoint would answer 404), and only those: not a renewed
// name, not a name whose own certificate went while a stored wildcard
// still serves it, not a wildcard pattern. Without marks=1 every line is
// a name, as an older reader expects; a bad marks is refused naming it.
func TestChangesMarks(t *testing.T) {
	st := newTestStore(t)
	// No time bound in the way (TestChangesMarksOutOfTime is about it).
	e := startCertEndpoint(t, CertEndpointConfig{Listen: "127.0.0.1:0", LookupTimeout: time.Minute}, st)
	addr := e.Addrs()[0].String()
	ctx := context.Background()
	cert := func(chain string, names ...string) *store.Certificate {
		return &store.Certificate{ID: names[0], Names: names, ChainPEM: []byte("CHAIN " + chain),
			KeyPEM: []byte("KEY " + chain), NotAfter: time.Now().Add(time.Hour)}
	}
	putCert(t, st, cert("renewed", "renewed.example.org"))
	putCert(t, st, cert("deleted", "deleted.example.org"))
	putCert(t, st, cert("pair", "pair.example.org", "left.example.org"))
	putCert(t, st, cert("sub", "sub.wild.example.org"))
	putCert(t, st, cert("wild", "*.wild.example.org"))
	putCert(t, st, cert("pattern", "*.pattern.example.org", "pattern.example.org"))
	cursor := func(body string) string {
		epoch, v, _ := strings.Cut(strings.SplitN(body, "\n", 2)[0], " ")
		return epoch + "." + v
	}
	_, body := rawRequest(t, addr, "GET", "/v1/changes?since=")
	since := cursor(body)

	putCert(t, st, cert("renewed 2", "renewed.example.org"))
	for _, id := range []string{"deleted.example.org", "sub.wild.example.org", "*.pattern.example.org"} {
		if err := st.DeleteCertificate(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	// left.example.org leaves the pair: no certificate holds it now.
	putCert(t, st, cert("pair 2", "pair.example.org"))

	for _, tc := range []struct {
		desc, query string
		want        []string
	}{
		{"no marks asked", "", []string{"renewed.example.org", "deleted.example.org", "sub.wild.example.org",
			"*.pattern.example.org", "pattern.example.org", "pair.example.org", "left.example.org"}},
		{"marks=0", "&marks=0", []string{"renewed.example.org", "deleted.example.org", "sub.wild.example.org",
			"*.pattern.example.org", "pattern.example.org", "pair.example.org", "left.example.org"}},
		{"marks=1", "&marks=1", []string{"renewed.example.org", "gone deleted.example.org", "sub.wild.example.org",
			"*.pattern.example.org", "gone pattern.example.org", "pair.example.org", "gone left.example.org"}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			resp, body := rawRequest(t, addr, "GET", "/v1/changes?since="+since+tc.query)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %q", resp.StatusCode, body)
			}
			lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")[1:]
			if got, want := strings.Join(lines, ","), strings.Join(tc.want, ","); got != want {
				t.Errorf("lines\n got %s\nwant %s", got, want)
			}
		})
	}

	t.Run("a name deleted after an answer is marked in the next", func(t *testing.T) {
		// The answers above were all at one point of the feed; marks
		// found then are not kept past it.
		if err := st.DeleteCertificate(ctx, "renewed.example.org"); err != nil {
			t.Fatal(err)
		}
		_, body := rawRequest(t, addr, "GET", "/v1/changes?since="+since+"&marks=1")
		if lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n"); !slices.Contains(lines, "gone renewed.example.org") {
			t.Errorf("lines %q, want renewed.example.org marked gone", lines[1:])
		}
	})

	t.Run("a reset is not marked", func(t *testing.T) {
		_, body := rawRequest(t, addr, "GET", "/v1/changes?since=&marks=1")
		if lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n"); len(lines) != 2 || lines[1] != "reset" {
			t.Errorf("answer %q, want a cursor and reset", body)
		}
	})

	for _, tc := range []struct{ desc, query, want string }{
		{"a word", "&marks=yes", `marks="yes": want 1`},
		{"empty", "&marks=", `marks="": want 1`},
		{"twice", "&marks=1&marks=1", "marks given 2 times"},
	} {
		t.Run("bad marks: "+tc.desc, func(t *testing.T) {
			resp, body := rawRequest(t, addr, "GET", "/v1/changes?since="+since+tc.query)
			if resp.StatusCode != 400 || !strings.Contains(body, tc.want) {
				t.Errorf("status %d %q, want 400 with %q", resp.StatusCode, body, tc.want)
			}
			if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control %q, want no-store", cc)
			}
		})
	}
}

// failingLookups fails LookupCertificate of the names in fail, as a store
// does that cannot read a record or open its key.
type failingLookups struct {
	store.Store
	fail map[string]bool
	// stall, when set, makes the lookup of a name in fail wait until
	// the lookup's context is done instead, as a store too slow does.
	stall *atomic.Bool
}

func (f failingLookups) LookupCertificate(ctx context.Context, name string) (*store.Certificate, error) {
	if f.fail[name] {
		if f.stall != nil && f.stall.Load() {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		if f.stall == nil {
			return nil, errors.New("lookup failed on purpose")
		}
	}
	return f.Store.LookupCertificate(ctx, name)
}

func (f failingLookups) Unwrap() store.Store { return f.Store }

// TestChangesMarksLookupFails: a name whose lookup fails, for another
// reason than there being no certificate, is listed plain (only said to
// have changed), never marked gone: the endpoint would not answer 404
// for it either.
func TestChangesMarksLookupFails(t *testing.T) {
	inner := newTestStore(t)
	st := failingLookups{Store: inner, fail: map[string]bool{"failing.example.org": true}}
	e := startCertEndpoint(t, CertEndpointConfig{Listen: "127.0.0.1:0", LookupTimeout: time.Minute}, st)
	addr := e.Addrs()[0].String()
	for _, n := range []string{"failing.example.org", "deleted.example.org"} {
		putCert(t, inner, &store.Certificate{ID: n, Names: []string{n}, ChainPEM: []byte("CHAIN"), KeyPEM: []byte("KEY"),
			NotAfter: time.Now().Add(time.Hour)})
	}
	_, body := rawRequest(t, addr, "GET", "/v1/changes?since=")
	since := strings.Replace(strings.SplitN(body, "\n", 2)[0], " ", ".", 1)
	for _, n := range []string{"failing.example.org", "deleted.example.org"} {
		if err := inner.DeleteCertificate(context.Background(), n); err != nil {
			t.Fatal(err)
		}
	}
	_, body = rawRequest(t, addr, "GET", "/v1/changes?since="+since+"&marks=1")
	lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")[1:]
	if got := strings.Join(lines, ","); got != "failing.example.org,gone deleted.example.org" {
		t.Errorf("lines %s, want failing.example.org plain and deleted.example.org gone", got)
	}
}

// TestChangesMarksOutOfTime: the marks take no longer than half the
// endpoint's LookupTimeout; names left when it is over are listed plain,
// and another poll at the same point of the feed looks them up.
func TestChangesMarksOutOfTime(t *testing.T) {
	inner := newTestStore(t)
	var stall atomic.Bool
	st := failingLookups{Store: inner, fail: map[string]bool{"slow.example.org": true}, stall: &stall}
	e := startCertEndpoint(t, CertEndpointConfig{Listen: "127.0.0.1:0", LookupTimeout: 4 * time.Second}, st)
	addr := e.Addrs()[0].String()
	names := []string{"slow.example.org", "deleted.example.org"}
	for _, n := range names {
		putCert(t, inner, &store.Certificate{ID: n, Names: []string{n}, ChainPEM: []byte("CHAIN"), KeyPEM: []byte("KEY"),
			NotAfter: time.Now().Add(time.Hour)})
	}
	_, body := rawRequest(t, addr, "GET", "/v1/changes?since=")
	since := strings.Replace(strings.SplitN(body, "\n", 2)[0], " ", ".", 1)
	for _, n := range names {
		if err := inner.DeleteCertificate(context.Background(), n); err != nil {
			t.Fatal(err)
		}
	}
	stall.Store(true)
	_, body = rawRequest(t, addr, "GET", "/v1/changes?since="+since+"&marks=1")
	if got := strings.Join(strings.Split(strings.TrimSuffix(body, "\n"), "\n")[1:], ","); got != "slow.example.org,deleted.example.org" {
		t.Errorf("out of time: lines %s, want both plain", got)
	}
	stall.Store(false)
	_, body = rawRequest(t, addr, "GET", "/v1/changes?since="+since+"&marks=1")
	if got := strings.Join(strings.Split(strings.TrimSuffix(body, "\n"), "\n")[1:], ","); got != "gone slow.example.org,gone deleted.example.org" {
		t.Errorf("in time: lines %s, want both gone", got)
	}
}

// countingLookups counts the LookupCertificate calls of a store.
type countingLookups struct {
	store.Store
	n *atomic.Int64
}

func (c countingLookups) LookupCertificate(ctx context.Context, name string) (*store.Certificate, error) {
	c.n.Add(1)
	return c.Store.LookupCertificate(ctx, name)
}

func (c countingLookups) Unwrap() store.Store { return c.Store }

// TestChangesMarksShared: the polls of the workers at one point of the
// feed share one round of lookups; a poll at a new point looks up again.
// A poll with no host name to mark does not wait for another's lookups,
// and one with names waits no longer than its own time, then answers
// them plain.
func TestChangesMarksShared(t *testing.T) {
	inner := newTestStore(t)
	var lookups atomic.Int64
	st := countingLookups{Store: inner, n: &lookups}
	e := startCertEndpoint(t, CertEndpointConfig{Listen: "127.0.0.1:0", LookupTimeout: time.Minute}, st)
	addr := e.Addrs()[0].String()
	ctx := context.Background()
	names := []string{"a.example.org", "b.example.org", "c.example.org"}
	for _, n := range names {
		putCert(t, inner, &store.Certificate{ID: n, Names: []string{n}, ChainPEM: []byte("CHAIN"), KeyPEM: []byte("KEY"),
			NotAfter: time.Now().Add(time.Hour)})
	}
	putCert(t, inner, &store.Certificate{ID: "*.wild.example.org", Names: []string{"*.wild.example.org"},
		ChainPEM: []byte("CHAIN"), KeyPEM: []byte("KEY"), NotAfter: time.Now().Add(time.Hour)})
	cursorOf := func(body string) string { return strings.Replace(strings.SplitN(body, "\n", 2)[0], " ", ".", 1) }
	_, body := rawRequest(t, addr, "GET", "/v1/changes?since=")
	since := cursorOf(body)
	if err := inner.DeleteCertificate(ctx, "a.example.org"); err != nil {
		t.Fatal(err)
	}
	putCert(t, inner, &store.Certificate{ID: "b.example.org", Names: []string{"b.example.org"}, ChainPEM: []byte("CHAIN 2"),
		KeyPEM: []byte("KEY 2"), NotAfter: time.Now().Add(time.Hour)})
	const want = "gone a.example.org,b.example.org"
	poll := func(since string) (string, string) {
		t.Helper()
		_, body := rawRequest(t, addr, "GET", "/v1/changes?since="+since+"&marks=1")
		return cursorOf(body), strings.Join(strings.Split(strings.TrimSuffix(body, "\n"), "\n")[1:], ",")
	}

	before := lookups.Load()
	if _, got := poll(since); got != want {
		t.Fatalf("first poll: lines %s, want %s", got, want)
	}
	if n := lookups.Load() - before; n == 0 {
		t.Fatalf("first poll made no lookups")
	}
	before = lookups.Load()
	if _, got := poll(since); got != want {
		t.Fatalf("second poll: lines %s, want %s", got, want)
	}
	if n := lookups.Load() - before; n != 0 {
		t.Errorf("second poll at the same point made %d lookups, want none (the first's memo)", n)
	}
	if err := inner.DeleteCertificate(ctx, "b.example.org"); err != nil {
		t.Fatal(err)
	}
	before = lookups.Load()
	if _, got := poll(since); got != "gone a.example.org,gone b.example.org" {
		t.Errorf("poll after a write: lines %s, want both gone", got)
	}
	if n := lookups.Load() - before; n == 0 {
		t.Errorf("poll at a new point made no lookups")
	}

	// Another poll holds the memo from here on.
	e.marks.turn <- struct{}{}
	defer func() { <-e.marks.turn }()
	answer := func(desc, since string) string {
		t.Helper()
		got := make(chan string, 1)
		go func() {
			_, lines := poll(since)
			got <- lines
		}()
		select {
		case lines := <-got:
			return lines
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: no answer while another poll holds the memo", desc)
			return ""
		}
	}
	// The wildcard pattern is no host name: nothing to mark.
	putCert(t, inner, &store.Certificate{ID: "*.wild.example.org", Names: []string{"*.wild.example.org"},
		ChainPEM: []byte("CHAIN 2"), KeyPEM: []byte("KEY 2"), NotAfter: time.Now().Add(time.Hour)})
	_, body = rawRequest(t, addr, "GET", "/v1/changes?since=")
	latest := cursorOf(body)
	if err := inner.DeleteCertificate(ctx, "*.wild.example.org"); err != nil {
		t.Fatal(err)
	}
	if got := answer("only a pattern", latest); got != "*.wild.example.org" {
		t.Errorf("only a pattern: lines %s", got)
	}
	next, _ := poll(latest)
	if got := answer("up to date", next); got != "" {
		t.Errorf("up to date: lines %s, want none", got)
	}
}

// TestChangesMarksWaitBounded: a poll whose marks must wait for another
// poll's lookups waits no longer than its own time, then answers its
// names plain.
func TestChangesMarksWaitBounded(t *testing.T) {
	st := newTestStore(t)
	e := startCertEndpoint(t, CertEndpointConfig{Listen: "127.0.0.1:0", LookupTimeout: 200 * time.Millisecond}, st)
	addr := e.Addrs()[0].String()
	putCert(t, st, &store.Certificate{ID: "a.example.org", Names: []string{"a.example.org"}, ChainPEM: []byte("CHAIN"),
		KeyPEM: []byte("KEY"), NotAfter: time.Now().Add(time.Hour)})
	_, body := rawRequest(t, addr, "GET", "/v1/changes?since=")
	since := strings.Replace(strings.SplitN(body, "\n", 2)[0], " ", ".", 1)
	if err := st.DeleteCertificate(context.Background(), "a.example.org"); err != nil {
		t.Fatal(err)
	}
	e.marks.turn <- struct{}{} // another poll's lookups, never over
	defer func() { <-e.marks.turn }()
	got := make(chan string, 1)
	go func() {
		_, body := rawRequest(t, addr, "GET", "/v1/changes?since="+since+"&marks=1")
		got <- body
	}()
	select {
	case body := <-got:
		if lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")[1:]; strings.Join(lines, ",") != "a.example.org" {
			t.Errorf("lines %q, want a.example.org plain", lines)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no answer while another poll holds the memo: the wait is not bounded by the poll's time")
	}
}

// A wave on a slow store makes every poll of every worker list names
// without marks: that is logged once a minute at most, not once a poll.
func TestChangesMarksWarnOnceAMinute(t *testing.T) {
	var out bytes.Buffer
	log := slog.New(slog.NewTextHandler(&out, nil))
	var m goneMemo
	for range 3 {
		m.warn(log, "names listed as changed only", "names", 5)
	}
	if n := strings.Count(out.String(), "names listed as changed only"); n != 1 {
		t.Fatalf("three warnings in a row logged %d lines, want 1:\n%s", n, out.String())
	}
	m.lastWarn.Add(-int64(marksWarnEvery))
	m.warn(log, "names listed as changed only again", "names", 5)
	if !strings.Contains(out.String(), "again") {
		t.Errorf("a warning a minute after the last was not logged:\n%s", out.String())
	}
}

// TestChangesMarksOpenNoKey: the marks look names up under the keys'
// sealing and open no key. A certificate whose key the endpoint cannot
// open (sealed under a key-encryption key it lacks) is looked up all the
// same, and listed plain: it is still a certificate, though the endpoint
// answers 500 for it. A deleted name beside it is marked gone.
func TestChangesMarksOpenNoKey(t *testing.T) {
	inner := newTestStore(t)
	writer := sealed.Wrap(inner, testKeyring(t, kek{"k1", 1}))
	e := startCertEndpoint(t, CertEndpointConfig{Listen: "127.0.0.1:0", LookupTimeout: time.Minute},
		sealed.Wrap(inner, testKeyring(t, kek{"k2", 2})))
	addr := e.Addrs()[0].String()
	names := []string{"unopened.example.org", "deleted.example.org"}
	for _, n := range names {
		putCert(t, writer, &store.Certificate{ID: n, Names: []string{n}, ChainPEM: []byte("CHAIN"), KeyPEM: []byte("KEY"),
			NotAfter: time.Now().Add(time.Hour)})
	}
	_, body := rawRequest(t, addr, "GET", "/v1/changes?since=")
	since := strings.Replace(strings.SplitN(body, "\n", 2)[0], " ", ".", 1)
	putCert(t, writer, &store.Certificate{ID: names[0], Names: names[:1], ChainPEM: []byte("CHAIN 2"), KeyPEM: []byte("KEY 2"),
		NotAfter: time.Now().Add(time.Hour)})
	if err := inner.DeleteCertificate(context.Background(), names[1]); err != nil {
		t.Fatal(err)
	}
	_, body = rawRequest(t, addr, "GET", "/v1/changes?since="+since+"&marks=1")
	if got := strings.Join(strings.Split(strings.TrimSuffix(body, "\n"), "\n")[1:], ","); got != "unopened.example.org,gone deleted.example.org" {
		t.Errorf("lines %s, want unopened.example.org plain and deleted.example.org gone", got)
	}
	// Looked up, not failed: the memo holds it as served (a failed
	// lookup is not kept, and would be tried again by the next poll).
	if no, ok := e.marks.gone[names[0]]; !ok || no {
		t.Errorf("memo of %s: gone %v, kept %v; want kept as served (looked up without opening its key)", names[0], no, ok)
	}
	if resp, _ := rawRequest(t, addr, "GET", "/v1/certs/"+names[0]); resp.StatusCode != 500 {
		t.Errorf("GET /v1/certs/%s: %d, want 500 (the endpoint cannot open its key)", names[0], resp.StatusCode)
	}
}
