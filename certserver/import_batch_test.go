package certserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/certserver/client"
	"github.com/certserver/certserver/store"
)

// syncBuffer is a bytes.Buffer safe for concurrent writers, for logs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// batchEnv is an admin API whose log is kept, with a client.
type batchEnv struct {
	st   store.Store
	cl   *client.Client
	base string
	log  *syncBuffer
}

func newBatchEnv(t *testing.T, cfg AdminConfig, st store.Store) *batchEnv {
	t.Helper()
	env := &batchEnv{st: st, log: &syncBuffer{}}
	cfg.Token, cfg.Listen = testToken, "127.0.0.1:0"
	a, err := NewAdminAPI(cfg, st, slog.New(slog.NewTextHandler(env.log, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Listen(context.Background()); err != nil {
		t.Fatal(err)
	}
	serving(t, a.Serve)
	env.base = "http://" + a.Addrs()[0].String()
	if env.cl, err = client.New(env.base, testToken, nil); err != nil {
		t.Fatal(err)
	}
	return env
}

// batchReq is the import request of c.
func batchReq(c testCert, origin string) api.ImportRequest {
	return api.ImportRequest{ChainPEM: string(c.chain), KeyPEM: string(c.key), Source: api.SourceCertbot, Origin: origin}
}

// TestAdminImportBatch: each certificate of a batch comes back with the
// result POST /v1/certificates would give it alone, in order; the batch
// is logged in one line; sending it again changes nothing and says so.
func TestAdminImportBatch(t *testing.T) {
	ctx := context.Background()
	now := time.Now().Truncate(time.Second)
	env := newBatchEnv(t, AdminConfig{Now: func() time.Time { return now }}, newTestStore(t))

	stored := newTestCert(t, now.Add(60*24*time.Hour), "kept.example.com")
	replaced := newTestCert(t, now.Add(30*24*time.Hour), "replaced.example.com")
	putCert(t, env.st, mustParse(t, stored, now))
	putCert(t, env.st, mustParse(t, replaced, now))

	good := newTestCert(t, now.Add(90*24*time.Hour), "a.example.com", "www.a.example.com")
	newer := newTestCert(t, now.Add(90*24*time.Hour), "replaced.example.com")
	older := newTestCert(t, now.Add(10*24*time.Hour), "kept.example.com")
	expired := newTestCert(t, now.Add(-time.Hour), "expired.example.com")
	mismatch := newTestCert(t, now.Add(90*24*time.Hour), "mismatch.example.com")
	mismatch.key = good.key
	dupOlder := newTestCert(t, now.Add(45*24*time.Hour), "a.example.com")

	reqs := []api.ImportRequest{
		batchReq(good, "/l/a"),
		batchReq(stored, "/l/kept"),
		batchReq(newer, "/l/replaced"),
		batchReq(older, "/l/kept-0001"),
		batchReq(expired, "/l/expired"),
		batchReq(mismatch, "/l/mismatch"),
		{ChainPEM: "", KeyPEM: string(good.key)},
		batchReq(good, "/l/a-again"),
		batchReq(dupOlder, "/l/a-0001"),
		{ChainPEM: "not pem", KeyPEM: "not pem"},
	}
	want := []struct {
		status int
		result string
		reason string
		id     string
	}{
		{201, api.ResultImported, "", "a.example.com"},
		{200, api.ResultUnchanged, "", "kept.example.com"},
		{200, api.ResultImported, "", "replaced.example.com"},
		{409, api.ResultSkipped, api.ReasonNewerStored, "kept.example.com"},
		{422, api.ResultRefused, api.ReasonExpired, ""},
		{422, api.ResultRefused, api.ReasonKeyMismatch, ""},
		{400, api.ResultRefused, "", ""},
		{200, api.ResultUnchanged, "", "a.example.com"},
		{409, api.ResultSkipped, api.ReasonNewerStored, "a.example.com"},
		{422, api.ResultRefused, api.ReasonNotCertificate, ""},
	}
	resp, err := env.cl.ImportCertificates(ctx, reqs)
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range want {
		r := resp.Results[i]
		if r.Status != w.status || r.Result != w.result || r.Reason != w.reason || r.ID != w.id {
			t.Errorf("certificate %d: status %d result %q reason %q id %q, want %d %q %q %q (error %q)",
				i+1, r.Status, r.Result, r.Reason, r.ID, w.status, w.result, w.reason, w.id, r.Error)
		}
		if r.Result == api.ResultRefused && r.Error == "" {
			t.Errorf("certificate %d: refused without an error message", i+1)
		}
	}
	if r := resp.Results[2]; r.ReplacedSerial != replaced.serial {
		t.Errorf("replaced_serial %q, want %q", r.ReplacedSerial, replaced.serial)
	}
	for name, serial := range map[string]string{"www.a.example.com": good.serial, "replaced.example.com": newer.serial, "kept.example.com": stored.serial} {
		if c, err := env.st.LookupCertificate(ctx, name); err != nil || c.Serial != serial {
			t.Errorf("lookup %s = %v, %v; want serial %s", name, c, err, serial)
		}
	}
	if c, err := env.st.GetCertificate(ctx, "a.example.com"); err != nil || c.Origin != "/l/a" || c.Source != api.SourceCertbot {
		t.Errorf("a.example.com stored as %+v, %v; want origin /l/a from certbot", c, err)
	}

	logs := env.log.String()
	if n := strings.Count(logs, "certificate batch imported"); n != 1 {
		t.Errorf("%d batch lines logged, want 1:\n%s", n, logs)
	}
	for _, kv := range []string{"certificates=10", "created=1", "replaced=1", "unchanged=2", "skipped=2", "refused=4"} {
		if !strings.Contains(logs, kv) {
			t.Errorf("batch line lacks %s:\n%s", kv, logs)
		}
	}
	if n := strings.Count(logs, "\n"); n != 1 {
		t.Errorf("%d log lines for one batch, want 1 (no request line, no line per certificate):\n%s", n, logs)
	}

	// The same batch again: nothing is written.
	again, err := env.cl.ImportCertificates(ctx, reqs)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range again.Results {
		if r.Result == api.ResultImported {
			t.Errorf("certificate %d imported again (status %d)", i+1, r.Status)
		}
	}
}

// mustParse returns the store record of c.
func mustParse(t *testing.T, c testCert, now time.Time) *store.Certificate {
	t.Helper()
	rec, err := store.ParseCertificate(c.chain, c.key, now)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// TestAdminImportBatchLimits: a batch over the body limit or over
// api.MaxImportBatch certificates is refused with 413 naming the limit,
// and nothing of it is written; a malformed entry names its position.
func TestAdminImportBatchLimits(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	env := newBatchEnv(t, AdminConfig{MaxImportBatchBody: 64 << 10, Now: func() time.Time { return now }}, newTestStore(t))
	c := newTestCert(t, now.Add(90*24*time.Hour), "limit.example.com")
	line := importBody(t, c) + "\n"

	many := strings.Repeat("{}\n", api.MaxImportBatch) + line
	big := strings.Repeat(line, (64<<10)/len(line)+1)
	for _, tc := range []struct {
		desc, body string
		status     int
		want       string
	}{
		{"over the body limit", big, 413, "limit of 65536 bytes"},
		{"over the count limit", many, 413, fmt.Sprintf("at most %d certificates", api.MaxImportBatch)},
		{"malformed third entry", line + line + "{\"chain_pem\": 3}\n", 400, "certificate 3: invalid JSON"},
		{"unknown field", "{\"chain\": \"x\"}\n", 400, "certificate 1: unknown field"},
		{"empty", "\n", 400, "empty request body"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			resp, doc, raw := call(t, "POST", env.base+"/v1/certificates/batch", "Bearer "+testToken, "application/x-ndjson", tc.body)
			if resp.StatusCode != tc.status || doc == nil || !strings.Contains(fmt.Sprint(doc["error"]), tc.want) {
				t.Errorf("status %d %s, want %d naming %q", resp.StatusCode, raw, tc.status, tc.want)
			}
		})
	}
	if _, err := env.st.GetCertificate(context.Background(), "limit.example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a refused batch was written: %v", err)
	}
	if !strings.Contains(env.log.String(), "status=413") {
		t.Errorf("a refused batch is not logged at info level:\n%s", env.log.String())
	}
}

// crashingStore fails every PutCertificates after the first okBatches,
// as a sidecar that dies while writing.
type crashingStore struct {
	store.Store
	mu        sync.Mutex
	okBatches int
}

func (s *crashingStore) PutCertificates(ctx context.Context, cs []*store.Certificate) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.okBatches == 0 {
		return errors.New("disk gone")
	}
	s.okBatches--
	return s.Store.PutCertificates(ctx, cs)
}

// TestAdminImportBatchFailedCommit: a batch whose commit fails is
// answered 500 and leaves nothing of itself in the store, while the
// batches before it stay; sending it again once the store works imports
// it, and the earlier ones are unchanged.
func TestAdminImportBatchFailedCommit(t *testing.T) {
	ctx := context.Background()
	now := time.Now().Truncate(time.Second)
	st := &crashingStore{Store: newTestStore(t), okBatches: 1}
	env := newBatchEnv(t, AdminConfig{Now: func() time.Time { return now }}, st)
	batch := func(prefix string) []api.ImportRequest {
		var reqs []api.ImportRequest
		for i := range 5 {
			reqs = append(reqs, batchReq(newTestCert(t, now.Add(90*24*time.Hour), fmt.Sprintf("%s%d.example.com", prefix, i)), prefix))
		}
		return reqs
	}
	first, second := batch("first"), batch("second")
	if _, err := env.cl.ImportCertificates(ctx, first); err != nil {
		t.Fatal(err)
	}
	_, err := env.cl.ImportCertificates(ctx, second)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != 500 {
		t.Fatalf("failed commit: %v, want a 500", err)
	}
	for i := range 5 {
		if _, err := st.GetCertificate(ctx, fmt.Sprintf("first%d.example.com", i)); err != nil {
			t.Errorf("committed batch lost: %v", err)
		}
		if _, err := st.GetCertificate(ctx, fmt.Sprintf("second%d.example.com", i)); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("failed batch partly written: second%d: %v", i, err)
		}
	}

	st.mu.Lock()
	st.okBatches = 2
	st.mu.Unlock()
	for _, b := range []struct {
		reqs []api.ImportRequest
		want string
	}{{second, api.ResultImported}, {first, api.ResultUnchanged}} {
		resp, err := env.cl.ImportCertificates(ctx, b.reqs)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range resp.Results {
			if r.Result != b.want {
				t.Errorf("%s certificate %d: %q, want %q", b.reqs[0].Origin, i+1, r.Result, b.want)
			}
		}
	}
}

// A panic in one of parallel's calls reaches the caller's goroutine, where
// the handler's recover answers 500, instead of killing the sidecar; the
// other calls still run.
func TestParallelRecoversPanic(t *testing.T) {
	var mu sync.Mutex
	ran := map[int]bool{}
	var got any
	func() {
		defer func() { got = recover() }()
		parallel(50, func(i int) {
			if i == 7 {
				panic("boom")
			}
			mu.Lock()
			ran[i] = true
			mu.Unlock()
		})
	}()
	p, ok := got.(*workerPanic)
	if !ok {
		t.Fatalf("recovered %#v, want a *workerPanic", got)
	}
	if p.value != "boom" || !strings.Contains(p.Error(), "boom") || !strings.Contains(p.Error(), "TestParallelRecoversPanic") {
		t.Errorf("panic %q does not hold the value and the stack of the call", p.Error())
	}
	if len(ran) != 49 {
		t.Errorf("%d calls ran besides the one that panicked, want 49", len(ran))
	}
}

// splittingStore takes at most max certificates per PutCertificates
// (store.ErrBatchTooLarge beyond) and fails the write numbered failAt
// (1-based, counting the writes it takes), as a store that dies between
// the parts of a batch too large for one commit.
type splittingStore struct {
	store.Store
	mu     sync.Mutex
	max    int
	writes int
	failAt int
}

func (s *splittingStore) PutCertificates(ctx context.Context, cs []*store.Certificate) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(cs) > s.max {
		return store.ErrBatchTooLarge
	}
	s.writes++
	if s.writes == s.failAt {
		return errors.New("disk gone")
	}
	return s.Store.PutCertificates(ctx, cs)
}

// TestAdminImportBatchPartlyStored: a batch written in two commits whose
// second fails is answered with a result per certificate: imported for
// the part committed, refused with status 500 for the rest, which a
// second upload imports.
func TestAdminImportBatchPartlyStored(t *testing.T) {
	ctx := context.Background()
	now := time.Now().Truncate(time.Second)
	st := &splittingStore{Store: newTestStore(t), max: 2, failAt: 2}
	env := newBatchEnv(t, AdminConfig{Now: func() time.Time { return now }}, st)
	var reqs []api.ImportRequest
	for i := range 4 {
		reqs = append(reqs, batchReq(newTestCert(t, now.Add(90*24*time.Hour), fmt.Sprintf("part%d.example.com", i)), "part"))
	}
	resp, err := env.cl.ImportCertificates(ctx, reqs)
	if err != nil {
		t.Fatalf("partly stored batch: %v, want a result per certificate", err)
	}
	for i, r := range resp.Results {
		_, gerr := st.GetCertificate(ctx, fmt.Sprintf("part%d.example.com", i))
		switch {
		case i < 2 && (r.Result != api.ResultImported || r.Status != 201 || gerr != nil):
			t.Errorf("certificate %d: %d %q (stored: %v), want 201 imported and stored", i+1, r.Status, r.Result, gerr)
		case i >= 2 && (r.Result != api.ResultRefused || r.Status != 500 || !strings.Contains(r.Error, "not stored") || !errors.Is(gerr, store.ErrNotFound)):
			t.Errorf("certificate %d: %d %q %q (stored: %v), want 500 refused, not stored", i+1, r.Status, r.Result, r.Error, gerr)
		}
	}
	if !strings.Contains(env.log.String(), "certificate batch partly stored") {
		t.Errorf("the partial commit is not logged:\n%s", env.log.String())
	}

	resp, err = env.cl.ImportCertificates(ctx, reqs)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range resp.Results {
		want := api.ResultImported
		if i < 2 {
			want = api.ResultUnchanged
		}
		if r.Result != want {
			t.Errorf("sent again, certificate %d: %q, want %q", i+1, r.Result, want)
		}
	}
}

// TestAdminOversizedBodyAnswered: a client sending a body far over the
// limit, more than the sockets buffer, reads the 413 that names the
// limit, with its length given or chunked, every time: the server reads
// and throws away the rest before it closes (lingerConn), instead of
// closing on it, which makes the client's write fail with "connection
// reset by peer" and loses the answer.
func TestAdminOversizedBodyAnswered(t *testing.T) {
	env := newBatchEnv(t, AdminConfig{MaxImportBatchBody: 64 << 10}, newTestStore(t))
	body := bytes.Repeat([]byte("{}\n"), (16<<20)/3)
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	for i := range 10 {
		for _, chunked := range []bool{false, true} {
			var r io.Reader = bytes.NewReader(body)
			if chunked {
				r = io.MultiReader(r) // no length known: chunked
			}
			req, err := http.NewRequest("POST", env.base+"/v1/certificates/batch", r)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+testToken)
			req.Header.Set("Content-Type", "application/x-ndjson")
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("post %d (chunked %v) of %d bytes: %v; want a 413", i, chunked, len(body), err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 413 || !strings.Contains(string(raw), "limit of 65536 bytes") {
				t.Fatalf("post %d (chunked %v): %d %s, want a 413 naming the limit", i, chunked, resp.StatusCode, raw)
			}
		}
	}
}

// TestAdminStopsLingering: a connection that lingers after a 413 (its
// client neither sends more nor closes) is closed when the server stops:
// no connection lingers once Serve has returned.
func TestAdminStopsLingering(t *testing.T) {
	a, err := NewAdminAPI(AdminConfig{Token: testToken, Listen: "127.0.0.1:0", MaxImportBatchBody: 64 << 10},
		newTestStore(t), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Listen(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx) }()

	conn, err := net.Dial("tcp", a.Addrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/certificates/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 100000000\r\n\r\n", testToken)
	conn.Write(bytes.Repeat([]byte("{}\n"), 1000))
	conn.SetReadDeadline(time.Now().Add(time.Minute))
	answer, _ := io.ReadAll(conn) // up to the server's FIN
	if !strings.HasPrefix(string(answer), "HTTP/1.1 413") {
		t.Fatalf("answer %q, want a 413", answer)
	}
	lingering := func() int {
		a.server.mu.Lock()
		defer a.server.mu.Unlock()
		return a.server.lingers.count()
	}
	if n := lingering(); n != 1 {
		t.Fatalf("%d connections linger after the 413 was sent, want 1", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	if n := lingering(); n != 0 {
		t.Errorf("%d connections still linger after Serve returned, want none", n)
	}
}

// At most maxLingering connections linger at once: past them a marked
// connection closes at once; once one is done, another may linger.
func TestLingerSetBounded(t *testing.T) {
	set := &lingerSet{conns: make(map[*lingerConn]struct{})}
	var started []*lingerConn
	for range maxLingering {
		c, _ := net.Pipe()
		defer c.Close()
		lc := &lingerConn{Conn: c, set: set}
		if !set.start(lc) {
			t.Fatalf("connection %d of %d refused", len(started)+1, maxLingering)
		}
		started = append(started, lc)
	}
	c, _ := net.Pipe()
	defer c.Close()
	extra := &lingerConn{Conn: c, set: set}
	if set.start(extra) {
		t.Fatalf("connection %d lingers, want at most %d", maxLingering+1, maxLingering)
	}
	set.done(started[0])
	if !set.start(extra) {
		t.Fatal("a connection refused after one of the lingering ones was done")
	}
	set.done(extra)
	for _, lc := range started[1:] {
		set.done(lc)
	}
	set.cut()
	if set.start(extra) {
		t.Error("a connection lingers after the cut")
	}
}
