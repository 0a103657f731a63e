package nginx_test

import (
	"bufio"
	"context"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver"
	"github.com/certserver/certserver/nginx/nginxtest"
	"github.com/certserver/certserver/store"
)

// fakeSidecar speaks the certificate endpoint's contract from a table of
// answers, so that these tests can make it misbehave in ways the real
// sidecar never does (garbage, mismatched keys, 5xx, slowness). The
// integration test uses the real one.
type fakeSidecar struct {
	sock string
	srv  *http.Server

	mu      sync.Mutex
	answers map[string]answer
	hits    map[string]int
	// The change feed: the epoch and the names changed in it, the
	// version of each its index plus one.
	epoch   int
	changed []string
	oldest  int // the oldest version still known; older cursors get a reset

	// The connections open, each true once a request on it reached
	// ServeHTTP (see settled).
	conns map[net.Conn]bool

	// Requests for certificates being answered now, and the most at once
	// since resetInflight.
	inflight, maxInflight int

	// leafFormat makes it answer in certserver.LeafFormat when asked
	// (see chain_test.go); chains are the intermediates it has served
	// the digests of, chainStatus a status to answer for a digest instead,
	// chainDelay how long it takes to answer for one.
	leafFormat  bool
	chains      map[string][]byte
	chainStatus map[string]int
	chainDelay  time.Duration

	// noMarks makes it answer the change feed as a sidecar older than
	// its marks does: marks=1 is ignored, every line a name.
	noMarks bool

	// feedGate, when set, holds every answer of the change feed until it
	// is closed (the answer then says what changed until then);
	// feedWaiting counts the polls it holds.
	feedGate    chan struct{}
	feedWaiting int

	// certGate, when set, holds every certificate answer until it is
	// closed (the request counted in hits first); certWaiting counts the
	// requests it holds.
	certGate    chan struct{}
	certWaiting int

	// polledFrom holds the PIDs of the nginx workers that polled the
	// change feed with a cursor, so had applied their first poll (see
	// feedSettled).
	polledFrom map[int32]bool
}

type connKey struct{}

// settleName is the name feedSettled's handshakes ask for; its requests
// are not counted in hits.
const settleName = "feed-settle.test"

// answer is what the fake sidecar says for one name. Names without one get
// the answer for the wildcard one label up ("*.example.test"), if any, else
// 404 with max-age 10.
type answer struct {
	status int
	body   []byte
	maxAge int // seconds; -1 sends no Cache-Control
	delay  time.Duration
	// gate, when set, holds this answer until it is closed (the request
	// counted in hits first).
	gate chan struct{}
	// chunked sends the body with chunked transfer coding, which the
	// module does not speak: a bad answer after a good status line.
	chunked bool
	// record is sent as X-Certserver-Record (none when empty).
	record string
}

func certAnswer(l leaf, maxAge int) answer {
	return answer{status: 200, body: append(append([]byte{}, l.chainPEM...), l.keyPEM...), maxAge: maxAge}
}

func startFakeSidecar(t testing.TB) *fakeSidecar {
	t.Helper()
	f := &fakeSidecar{
		sock:    filepath.Join(shortTempDir(t), "certs.sock"),
		answers: map[string]answer{},
		hits:    map[string]int{},
	}
	f.listen(t, "unix", f.sock)
	return f
}

// listen serves f on a new listener, after stop.
func (f *fakeSidecar) listen(t testing.TB, network, addr string) {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: f,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
		ConnState: func(c net.Conn, st http.ConnState) {
			f.mu.Lock()
			defer f.mu.Unlock()
			switch st {
			case http.StateNew:
				if f.conns == nil {
					f.conns = make(map[net.Conn]bool)
				}
				f.conns[c] = false
			case http.StateClosed, http.StateHijacked:
				delete(f.conns, c)
			}
		},
	}
	go srv.Serve(l)
	f.mu.Lock()
	f.srv = srv
	f.mu.Unlock()
	t.Cleanup(func() { srv.Close() })
}

// stop closes the fake sidecar's socket (removing its file) and every
// connection, as a stopped sidecar does.
func (f *fakeSidecar) stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.srv.Close()
}

func (f *fakeSidecar) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v1/changes" {
		f.serveChanges(w, r)
		return
	}
	if d, ok := strings.CutPrefix(r.URL.Path, certserver.ChainPathPrefix); ok {
		f.serveChain(w, d)
		return
	}
	name, ok := strings.CutPrefix(r.URL.Path, "/v1/certs/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	f.mu.Lock()
	if name != settleName {
		f.hits[name]++
	}
	if c, ok := r.Context().Value(connKey{}).(net.Conn); ok {
		if _, open := f.conns[c]; open {
			f.conns[c] = true
		}
	}
	a, match, ok := f.lookup(name)
	f.inflight++
	f.maxInflight = max(f.maxInflight, f.inflight)
	gate := f.certGate
	if gate != nil {
		f.certWaiting++
	}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inflight--
		f.mu.Unlock()
	}()
	if gate != nil {
		<-gate
		f.mu.Lock()
		f.certWaiting--
		f.mu.Unlock()
	}
	if !ok {
		a = answer{status: 404, maxAge: 10}
	}
	if a.gate != nil {
		<-a.gate
	}
	time.Sleep(a.delay)
	if a.maxAge >= 0 {
		w.Header().Set("Cache-Control", "max-age="+strconv.Itoa(a.maxAge))
	}
	if a.record != "" {
		w.Header().Set("X-Certserver-Record", a.record)
	}
	if a.status == 200 {
		w.Header().Set("X-Certserver-Match", match) // the stored name that matched
		if strings.Contains(r.Header.Get("Accept"), certserver.LeafFormat) {
			a = f.leafAnswer(w, a)
		}
	}
	if a.chunked {
		w.WriteHeader(a.status)
		w.Write(a.body)
		w.(http.Flusher).Flush() // no Content-Length: chunked
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(a.body)))
	w.WriteHeader(a.status)
	w.Write(a.body)
}

// settled waits until every request sent to f (over unix socket sock)
// before the call has been counted in hits: it connects once more, which
// the listener accepts after every connection made before it, then polls
// until each connection accepted has had a request reach ServeHTTP or is
// closed. It fails t after a generous bound. It is exact only when no
// connection carries a second request: f.srv.SetKeepAlivesEnabled(false)
// before nginx starts.
func (f *fakeSidecar) settled(t testing.TB) {
	t.Helper()
	c, err := net.Dial("unix", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /v1/certs/settled.invalid HTTP/1.1\r\nHost: sidecar\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("fake sidecar: a request of its own: %v", err)
	}
	resp.Body.Close()
	eventually(t, 15*time.Second, "every request sent to the fake sidecar counted", func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, served := range f.conns {
			if !served {
				return fmt.Errorf("a connection without a request")
			}
		}
		return nil
	})
}

// feedSettled returns once each of nginx's workers (at addr) has
// applied its first poll of the change feed. A worker starts polling at
// its first handshake, a second after; the first poll of nginx answers
// reset, and what was fetched before it is fetched again at its next
// handshake. A test that counts fetches calls it before it counts: then
// whether its handshakes come before or after that poll, which load
// decides, changes nothing. It makes handshakes for settleName until every
// worker has polled with a cursor, and fails t after a generous bound.
func (f *fakeSidecar) feedSettled(t testing.TB, addr string, workers int) {
	t.Helper()
	eventually(t, time.Minute, fmt.Sprintf("a poll of the change feed with a cursor from each of %d nginx workers", workers), func() error {
		handshake(addr, settleName, nil) // the fallback: any outcome starts the worker's feed
		f.mu.Lock()
		defer f.mu.Unlock()
		if n := len(f.polledFrom); n < workers {
			return fmt.Errorf("%d of %d workers polled with a cursor", n, workers)
		}
		return nil
	})
}

// peerPID returns the process ID of the client of r, sent over a unix
// socket.
func peerPID(r *http.Request) (int32, bool) {
	c, ok := r.Context().Value(connKey{}).(*net.UnixConn)
	if !ok {
		return 0, false
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	var cred *syscall.Ucred
	raw.Control(func(fd uintptr) {
		cred, err = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	})
	if err != nil || cred == nil {
		return 0, false
	}
	return cred.Pid, true
}

// lookup returns the answer for name (f.mu held): its own, else that of
// the wildcard one label up, with the stored name that matched; false
// when there is neither.
func (f *fakeSidecar) lookup(name string) (answer, string, bool) {
	if a, ok := f.answers[name]; ok {
		return a, name, true
	}
	// A wildcard answers for the names one label below it.
	if i := strings.IndexByte(name, '.'); i > 0 {
		match := "*" + name[i:]
		if a, ok := f.answers[match]; ok {
			return a, match, true
		}
	}
	return answer{}, name, false
}

func (f *fakeSidecar) set(name string, a answer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[name] = a
}

// serveChanges answers GET /v1/changes?since=EPOCH.VERSION as the real
// sidecar does, from f.changed.
func (f *fakeSidecar) serveChanges(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	if gate := f.feedGate; gate != nil {
		f.feedWaiting++
		f.mu.Unlock()
		<-gate
		f.mu.Lock()
		f.feedWaiting--
	}
	defer f.mu.Unlock()
	if r.URL.Query().Get("since") != "" {
		if pid, ok := peerPID(r); ok {
			if f.polledFrom == nil {
				f.polledFrom = make(map[int32]bool)
			}
			f.polledFrom[pid] = true
		}
	}
	ch := store.Changes{Next: store.Cursor{Epoch: strconv.Itoa(f.epoch), Version: uint64(len(f.changed))}}
	since := certserver.ParseCursor(r.URL.Query().Get("since"))
	if since.Epoch != ch.Next.Epoch || since.Version > ch.Next.Version || since.Version < uint64(f.oldest) {
		ch.Reset = true
	} else {
		ch.Names = f.changed[since.Version:]
	}
	// Marked as the real sidecar does when asked: the host names it
	// would answer 404 for now.
	var gone map[string]bool
	if r.URL.Query().Get("marks") == "1" && !f.noMarks {
		gone = make(map[string]bool)
		for _, n := range ch.Names {
			if a, _, ok := f.lookup(n); !strings.HasPrefix(n, "*.") && (!ok || a.status == 404) {
				gone[n] = true
			}
		}
	}
	body := certserver.AppendChanges(nil, ch, gone)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Write(body)
}

// holdCerts makes f hold every certificate answer (see certGate) until
// the function it returns is called (at the latest when t ends).
func (f *fakeSidecar) holdCerts(t testing.TB) (release func()) {
	gate := make(chan struct{})
	f.mu.Lock()
	f.certGate = gate
	f.mu.Unlock()
	var once sync.Once
	release = func() {
		once.Do(func() {
			f.mu.Lock()
			f.certGate = nil
			f.mu.Unlock()
			close(gate)
		})
	}
	t.Cleanup(release)
	return release
}

// certsHeld waits until f holds n certificate requests (see holdCerts),
// the most one per worker pre-warming, one at a time each.
func (f *fakeSidecar) certsHeld(t testing.TB, n int) {
	t.Helper()
	eventually(t, 3*time.Minute, "certificate requests held by the fake sidecar", func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.certWaiting < n {
			return fmt.Errorf("%d of %d held", f.certWaiting, n)
		}
		return nil
	})
}

// change sets the answer for name, as set does, and lists names (name
// when none are given) in the change feed, as the real sidecar does when
// a certificate is stored or deleted.
func (f *fakeSidecar) change(name string, a answer, names ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[name] = a
	if len(names) == 0 {
		names = []string{name}
	}
	f.changed = append(f.changed, names...)
}

// changeAll sets the answers of answers, as set does, and lists their
// names in the change feed at once, in one version each.
func (f *fakeSidecar) changeAll(answers map[string]answer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for name, a := range answers {
		f.answers[name] = a
		f.changed = append(f.changed, name)
	}
}

// resetInflight starts counting the most certificate requests answered
// at once anew; it returns the most since the last reset.
func (f *fakeSidecar) resetInflight() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := f.maxInflight
	f.maxInflight = f.inflight
	return m
}

// newStore starts a new epoch of the change feed, as a sidecar on another
// store does: every cursor nginx holds gets a reset.
func (f *fakeSidecar) newStore() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.epoch++
	f.changed, f.oldest = nil, 0
}

// trimFeed records a change of an unrelated name and forgets every change
// before it, as the real sidecar does beyond its history: every cursor
// nginx holds gets a reset, in the same epoch.
func (f *fakeSidecar) trimFeed() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.changed = append(f.changed, "unrelated.test")
	f.oldest = len(f.changed)
}

func (f *fakeSidecar) hitsFor(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hits[name]
}

func (f *fakeSidecar) totalHits() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, h := range f.hits {
		n += h
	}
	return n
}

// TestLuaModule drives lua/resty/certserver.lua in a real nginx against a
// fake sidecar: caching, one request per name, negative answers, names it
// refuses to ask about, and answers it must survive.
func TestLuaModule(t *testing.T) {
	ca := newTestCA(t)
	fallback := ca.issue(t, "fallback.invalid")
	fbCert, fbKey := fallback.writeFiles(t, t.TempDir(), "fallback")
	side := startFakeSidecar(t)
	ngx := nginxtest.Start(t, nginxtest.Options{
		Sidecar:      "unix:" + side.sock,
		FallbackCert: fbCert,
		FallbackKey:  fbKey,
	})
	addr := ngx.HTTPSAddr()
	side.feedSettled(t, addr, 2)

	serves := func(t *testing.T, sni string, want *big.Int) {
		t.Helper()
		if got := servedSerial(t, addr, sni); got.Cmp(want) != 0 {
			t.Fatalf("%q served serial %v, want %v (fallback is %v)", sni, got, want, fallback.serial)
		}
	}

	t.Run("fetches a name once and serves it from the caches", func(t *testing.T) {
		l := ca.issue(t, "cached.test")
		side.set("cached.test", certAnswer(l, 60))
		for range 20 {
			if _, err := handshake(addr, "cached.test", ca.pool); err != nil {
				t.Fatalf("handshake: %v", err)
			}
		}
		serves(t, "cached.test", l.serial)
		if h := side.hitsFor("cached.test"); h != 1 {
			t.Errorf("sidecar asked %d times, want 1", h)
		}
	})

	// (Go's TLS client strips trailing dots itself, so the module's
	// stripping of one is not exercised here.)
	t.Run("normalizes case", func(t *testing.T) {
		l := ca.issue(t, "mixed.test")
		side.set("mixed.test", certAnswer(l, 60))
		serves(t, "MiXed.TEST", l.serial)
		serves(t, "mixed.test", l.serial)
		if h := side.hitsFor("mixed.test"); h != 1 {
			t.Errorf("sidecar asked %d times for mixed.test, want 1", h)
		}
	})

	t.Run("concurrent first handshakes make one request", func(t *testing.T) {
		l := ca.issue(t, "burst.test")
		a := certAnswer(l, 60)
		a.delay = 300 * time.Millisecond
		side.set("burst.test", a)
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for range 16 {
			wg.Go(func() {
				errs <- expectSerial(addr, "burst.test", l.serial)()
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
		if h := side.hitsFor("burst.test"); h != 1 {
			t.Errorf("sidecar asked %d times, want 1", h)
		}
	})

	t.Run("negative answers serve the fallback and are remembered", func(t *testing.T) {
		for _, tc := range []struct {
			desc string
			name string
			a    answer
		}{
			{desc: "404", name: "none.test", a: answer{status: 404, maxAge: 10}},
			{desc: "400", name: "refused.test", a: answer{status: 400, maxAge: 600}},
		} {
			t.Run(tc.desc, func(t *testing.T) {
				side.set(tc.name, tc.a)
				for range 10 {
					serves(t, tc.name, fallback.serial)
				}
				if h := side.hitsFor(tc.name); h != 1 {
					t.Errorf("sidecar asked %d times, want 1", h)
				}
			})
		}
	})

	t.Run("malformed names are not asked about", func(t *testing.T) {
		before := side.totalHits()
		for _, sni := range []string{"under_score.test", "a..b.test", ".lead.test", "sp ace.test", strings.Repeat("a", 250) + ".test",
			strings.Repeat("a", 64) + ".test", "-lead.test", "trail-.test", "ab--cd.test", "host.123", "192.0.2.1.example.123"} {
			serves(t, sni, fallback.serial)
		}
		if h := side.totalHits() - before; h != 0 {
			t.Errorf("sidecar asked %d times, want 0", h)
		}
	})

	t.Run("bad answers serve the fallback", func(t *testing.T) {
		l1, l2 := ca.issue(t, "mismatch.test"), ca.issue(t, "mismatch.test")
		for _, tc := range []struct {
			desc string
			name string
			a    answer
		}{
			{desc: "garbage body", name: "garbage.test", a: answer{status: 200, body: []byte("not a certificate\n"), maxAge: 60}},
			{desc: "key of another certificate", name: "mismatch.test", a: answer{status: 200, body: append(append([]byte{}, l1.chainPEM...), l2.keyPEM...), maxAge: 60}},
			{desc: "chain without key", name: "nokey.test", a: answer{status: 200, body: l1.chainPEM, maxAge: 60}},
			{desc: "server error", name: "broken.test", a: answer{status: 500, body: []byte("internal error\n"), maxAge: -1}},
		} {
			t.Run(tc.desc, func(t *testing.T) {
				side.set(tc.name, tc.a)
				for range 5 {
					serves(t, tc.name, fallback.serial)
				}
				// error_ttl (2s) holds off further requests for the name.
				if h := side.hitsFor(tc.name); h != 1 {
					t.Errorf("sidecar asked %d times, want 1", h)
				}
			})
		}
	})

	t.Run("a renewed certificate replaces the cached one after max-age", func(t *testing.T) {
		old, renewed := ca.issue(t, "renew.test"), ca.issue(t, "renew.test")
		side.set("renew.test", certAnswer(old, 1))
		serves(t, "renew.test", old.serial)
		side.set("renew.test", certAnswer(renewed, 1))
		eventually(t, 10*time.Second, "renewed certificate served", expectSerial(addr, "renew.test", renewed.serial))
	})

	t.Run("a 404 replaces a cached certificate", func(t *testing.T) {
		l := ca.issue(t, "removed.test")
		side.set("removed.test", certAnswer(l, 1))
		serves(t, "removed.test", l.serial)
		side.set("removed.test", answer{status: 404, maxAge: 10})
		eventually(t, 10*time.Second, "fallback served", expectSerial(addr, "removed.test", fallback.serial))
	})

	t.Run("a failing sidecar keeps the stale certificate served", func(t *testing.T) {
		l := ca.issue(t, "stale.test")
		side.set("stale.test", certAnswer(l, 1))
		serves(t, "stale.test", l.serial)
		side.set("stale.test", answer{status: 503, maxAge: -1})
		eventually(t, 10*time.Second, "refresh attempted", func() error {
			serves(t, "stale.test", l.serial)
			if h := side.hitsFor("stale.test"); h < 2 {
				return fmt.Errorf("sidecar asked %d times", h)
			}
			return nil
		})
		for range 5 {
			serves(t, "stale.test", l.serial)
		}
	})

	t.Run("no SNI serves the fallback", func(t *testing.T) {
		serves(t, "", fallback.serial)
	})

	t.Run("an A-label is asked about", func(t *testing.T) {
		l := ca.issue(t, "xn--bcher-kva.test")
		side.set("xn--bcher-kva.test", certAnswer(l, 60))
		serves(t, "xn--bcher-kva.test", l.serial)
	})

	t.Run("a bad answer after a good status line blocks only its name", func(t *testing.T) {
		l := ca.issue(t, "chunked.test")
		a := certAnswer(l, 60)
		a.chunked = true
		side.set("chunked.test", a)
		serves(t, "chunked.test", fallback.serial)
		// Not "sidecar down": another name is asked about at once.
		other := ca.issue(t, "after-chunked.test")
		side.set("after-chunked.test", certAnswer(other, 60))
		serves(t, "after-chunked.test", other.serial)
	})

	// Each worker logs one bad answer a minute; which one depends on
	// which worker took which handshake.
	if n := countLines(ngx.ErrorLog(), "certserver: bad answer"); n < 1 || n > 2 {
		t.Errorf("error log has %d lines about bad answers, want 1 or 2 (two workers, rate-limited):\n%s", n, ngx.ErrorLog())
	}
	ngx.AssertCleanErrorLog(t)
}

// TestLuaTimeoutNotRetried: a sidecar that does not answer within
// read_timeout_ms is asked once, not twice: a retry on the pooled
// connection would only double the time a handshake waits (and the fetch
// lock outlive lock_timeout_ms). One nginx worker, so that the second
// request goes on the connection the first one left in the pool.
func TestLuaTimeoutNotRetried(t *testing.T) {
	ca := newTestCA(t)
	fallback := ca.issue(t, "fallback.invalid")
	fbCert, fbKey := fallback.writeFiles(t, t.TempDir(), "fallback")
	side := startFakeSidecar(t)
	side.srv.SetKeepAlivesEnabled(false) // a new connection a request, for settled
	ngx := nginxtest.Start(t, nginxtest.Options{Sidecar: "unix:" + side.sock, FallbackCert: fbCert, FallbackKey: fbKey, Workers: 1})
	addr := ngx.HTTPSAddr()
	side.feedSettled(t, addr, 1)

	warm := ca.issue(t, "warm.test")
	side.set("warm.test", certAnswer(warm, 60))
	if got := servedSerial(t, addr, "warm.test"); got.Cmp(warm.serial) != 0 {
		t.Fatalf("warm.test served serial %v, want %v", got, warm.serial)
	}
	slow := ca.issue(t, "slow.test")
	a := certAnswer(slow, 60)
	a.delay = 900 * time.Millisecond // read_timeout_ms is 500
	side.set("slow.test", a)
	if got := servedSerial(t, addr, "slow.test"); got.Cmp(fallback.serial) != 0 {
		t.Fatalf("slow.test served serial %v, want the fallback %v", got, fallback.serial)
	}
	// A retry would have been sent before the handshake ended.
	side.settled(t)
	if h := side.hitsFor("slow.test"); h != 1 {
		t.Errorf("sidecar asked %d times after a timeout, want 1", h)
	}
}
