package certserver

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// newTestMetrics returns Metrics over st that never scan by themselves:
// tests call Refresh.
func newTestMetrics(t *testing.T, st store.Store, now func() time.Time) *Metrics {
	t.Helper()
	m, err := NewMetrics(MetricsConfig{Now: now, FailingLimit: 2, SoonestLimit: 3}, st, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// scrape GETs /metrics from the admin API at base and parses the answer.
func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: %d %s %q", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return mfs
}

// value returns the value of the sample of family name whose labels are
// the given name=value pairs, and whether there is one. A histogram's
// value is its sample count.
func value(mfs map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		case m.Untyped != nil:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

// fakeCert returns a certificate record for name expiring at notAfter,
// with placeholder PEM: the store does not parse it.
func fakeCert(name string, notAfter time.Time) *store.Certificate {
	return &store.Certificate{ID: name, Names: []string{name}, ChainPEM: []byte("CHAIN " + name + "\n"),
		KeyPEM: []byte("KEY " + name + "\n"), NotBefore: notAfter.Add(-90 * 24 * time.Hour), NotAfter: notAfter,
		Issuer: "CN=Test CA", Source: "import"}
}

// setDomain changes the stored record of name.
func setDomain(t *testing.T, st store.Store, name string, fn func(d *store.Domain)) {
	t.Helper()
	if err := st.UpdateDomain(context.Background(), name, func(d *store.Domain) error { fn(d); return nil }); err != nil {
		t.Fatalf("update %s: %v", name, err)
	}
}

// TestMetricsScrape drives a real admin API and certificate endpoint over
// a real Badger store through known actions (names added through the
// API, certificates stored, requests to the endpoint) and checks what
// GET /metrics then says.
func TestMetricsScrape(t *testing.T) {
	now := time.Now()
	ctx := context.Background()
	st := newTestStore(t)
	m := newTestMetrics(t, st, func() time.Time { return now })
	base := startAdmin(t, AdminConfig{Token: testToken, Metrics: m, Now: func() time.Time { return now }}, st)
	e := startCertEndpoint(t, CertEndpointConfig{Listen: "127.0.0.1:0", Metrics: m}, st)
	certs := e.Addrs()[0].String()

	// Before the first inventory: the runtime, the endpoint's counters at
	// 0, no inventory families.
	mfs := scrape(t, base)
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "certserver_inventory_errors_total"} {
		if _, ok := value(mfs, name); !ok {
			t.Errorf("%s missing before the first inventory", name)
		}
	}
	if v, ok := value(mfs, "certserver_cert_requests_total", "code", "404"); !ok || v != 0 {
		t.Errorf("certserver_cert_requests_total{code=404} = %v, %v before any request; want 0", v, ok)
	}
	if _, ok := value(mfs, "certserver_domains", "state", "valid"); ok {
		t.Error("certserver_domains exported before the first inventory")
	}

	// Known actions.
	resp, _, body := call(t, "POST", base+"/v1/domains", "Bearer "+testToken, "text/plain",
		"a.example.com\nb.example.com\nc.example.com\nd.example.com\ne.example.com\n")
	if resp.StatusCode != 200 {
		t.Fatalf("add domains: %d %s", resp.StatusCode, body)
	}
	for name, left := range map[string]time.Duration{
		"a.example.com":    60 * 24 * time.Hour,
		"b.example.com":    3 * 24 * time.Hour,
		"c.example.com":    10 * 24 * time.Hour,
		"old.example.org":  -24 * time.Hour,
		"*.wild.example.o": 30 * 24 * time.Hour,
	} {
		putCert(t, st, fakeCert(name, now.Add(left)))
	}
	for _, name := range []string{"a.example.com", "b.example.com"} {
		setDomain(t, st, name, func(d *store.Domain) {
			d.State, d.CertID, d.NextAttempt = store.StateValid, name, now.Add(30*24*time.Hour)
		})
	}
	setDomain(t, st, "c.example.com", func(d *store.Domain) {
		d.State, d.Failures, d.LastError = store.StateFailing, 3, "acme caa: CAA record forbids issuance"
		d.FailingSince, d.NextAttempt = now.Add(-2*time.Hour), now.Add(time.Hour)
	})
	setDomain(t, st, "d.example.com", func(d *store.Domain) { d.State, d.NextAttempt = store.StateRemoved, time.Time{} })
	// e.example.com stays pending and due.

	for _, r := range []struct{ method, path string }{
		{"GET", "/v1/certs/a.example.com"},
		{"GET", "/v1/certs/x.wild.example.o"},
		{"GET", "/v1/certs/unknown.example.com"},
		{"GET", "/v1/certs/not_a_name!"},
		{"POST", "/v1/certs/a.example.com"},
		{"GET", "/v1/changes?since="}, // nginx's polls: not counted
	} {
		rawRequest(t, certs, r.method, r.path)
	}
	if err := m.Refresh(ctx); err != nil {
		t.Fatal(err)
	}

	mfs = scrape(t, base)
	tests := []struct {
		desc   string
		name   string
		labels []string
		want   float64
	}{
		{desc: "pending", name: "certserver_domains", labels: []string{"state", "pending"}, want: 1},
		{desc: "valid", name: "certserver_domains", labels: []string{"state", "valid"}, want: 2},
		{desc: "failing", name: "certserver_domains", labels: []string{"state", "failing"}, want: 1},
		{desc: "removed", name: "certserver_domains", labels: []string{"state", "removed"}, want: 1},
		{desc: "issuing at 0", name: "certserver_domains", labels: []string{"state", "issuing"}, want: 0},
		{desc: "renewing at 0", name: "certserver_domains", labels: []string{"state", "renewing"}, want: 0},
		{desc: "queue: the pending name only", name: "certserver_queue_depth", want: 1},
		{desc: "certificates stored", name: "certserver_certificates", want: 5},
		{desc: "expired", name: "certserver_certificates_expired", want: 1},
		{desc: "expiring within 7 days", name: "certserver_certificates_expiring", labels: []string{"within", "7d"}, want: 1},
		{desc: "expiring within 14 days", name: "certserver_certificates_expiring", labels: []string{"within", "14d"}, want: 2},
		{desc: "served (exact and wildcard)", name: "certserver_cert_requests_total", labels: []string{"code", "200"}, want: 2},
		{desc: "not found", name: "certserver_cert_requests_total", labels: []string{"code", "404"}, want: 1},
		{desc: "invalid name", name: "certserver_cert_requests_total", labels: []string{"code", "400"}, want: 1},
		{desc: "wrong method", name: "certserver_cert_requests_total", labels: []string{"code", "405"}, want: 1},
		{desc: "no store failure", name: "certserver_cert_requests_total", labels: []string{"code", "500"}, want: 0},
		{desc: "every answer timed", name: "certserver_cert_request_duration_seconds", want: 5},
		{desc: "no scan failed", name: "certserver_inventory_errors_total", want: 0},
		{desc: "inventory time", name: "certserver_inventory_timestamp_seconds", want: float64(now.UnixNano()) / 1e9},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			got, ok := value(mfs, tc.name, tc.labels...)
			if !ok {
				t.Fatalf("%s%v missing", tc.name, tc.labels)
			}
			if math.Abs(got-tc.want) > 1e-3 {
				t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
			}
		})
	}
	// Badger is a Sizer: its value log exists from the start.
	if v, ok := value(mfs, "certserver_store_size_bytes", "part", "vlog"); !ok || v <= 0 {
		t.Errorf("certserver_store_size_bytes{part=vlog} = %v (exported: %v), want a positive size", v, ok)
	}
	for name, mf := range mfs {
		if !strings.HasPrefix(name, "certserver_") && !strings.HasPrefix(name, "go_") &&
			!strings.HasPrefix(name, "process_") && !strings.HasPrefix(name, "promhttp_") {
			t.Errorf("unexpected family %s (%s)", name, mf.GetHelp())
		}
	}
}

// sizedStore is a store that says how large it is.
type sizedStore struct {
	store.Store
	lsm, vlog int64
}

func (s sizedStore) Size() (int64, int64) { return s.lsm, s.vlog }

func TestMetricsStoreSize(t *testing.T) {
	st := sizedStore{Store: newTestStore(t), lsm: 12345, vlog: 678}
	m := newTestMetrics(t, st, time.Now)
	base := startAdmin(t, AdminConfig{Token: testToken, Metrics: m}, st)
	mfs := scrape(t, base)
	for part, want := range map[string]float64{"lsm": 12345, "vlog": 678} {
		if got, ok := value(mfs, "certserver_store_size_bytes", "part", part); !ok || got != want {
			t.Errorf("certserver_store_size_bytes{part=%q} = %v, %v; want %v", part, got, ok, want)
		}
	}
}

// TestMetricsAuth checks who may read /metrics and the status page.
func TestMetricsAuth(t *testing.T) {
	st := newTestStore(t)
	m := newTestMetrics(t, st, time.Now)
	base := startAdmin(t, AdminConfig{Token: testToken, Metrics: m}, st)
	basic := func(user, pw string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pw))
	}
	tests := []struct {
		desc      string
		path      string
		auth      string
		status    int
		challenge string
	}{
		{desc: "metrics without token", path: "/metrics", status: 401, challenge: "Bearer"},
		{desc: "metrics with bearer", path: "/metrics", auth: "Bearer " + testToken, status: 200},
		{desc: "metrics with wrong bearer", path: "/metrics", auth: "Bearer nope", status: 401, challenge: "Bearer"},
		{desc: "metrics refuse basic", path: "/metrics", auth: basic("admin", testToken), status: 401, challenge: "Bearer"},
		{desc: "status page without credentials", path: "/", status: 401, challenge: "Basic"},
		{desc: "status page with basic", path: "/", auth: basic("admin", testToken), status: 200},
		{desc: "status page ignores the user name", path: "/", auth: basic("", testToken), status: 200},
		{desc: "status page with wrong password", path: "/", auth: basic("admin", "nope"), status: 401, challenge: "Basic"},
		{desc: "status page with token as user name", path: "/", auth: basic(testToken, ""), status: 401, challenge: "Basic"},
		{desc: "status page with malformed basic", path: "/", auth: "Basic !!!", status: 401, challenge: "Basic"},
		{desc: "status page with bearer", path: "/", auth: "Bearer " + testToken, status: 200},
		{desc: "status page with another scheme", path: "/", auth: "Digest x", status: 401, challenge: "Basic"},
		{desc: "API refuses basic", path: "/v1/domains", auth: basic("admin", testToken), status: 401, challenge: "Bearer"},
		{desc: "healthz stays public", path: "/healthz", status: 200},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			resp, _, body := call(t, "GET", base+tc.path, tc.auth, "", "")
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if got := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, tc.challenge) || (tc.challenge == "") != (got == "") {
				t.Errorf("WWW-Authenticate %q, want a %q challenge", got, tc.challenge)
			}
			if tc.status == 401 && strings.Contains(body, "certserver_") {
				t.Errorf("a refused request got metrics: %s", body)
			}
		})
	}
}

// TestMetricsRoutesNeedMetrics checks that without Metrics the admin API
// has neither /metrics nor the status page.
func TestMetricsRoutesNeedMetrics(t *testing.T) {
	base := startAdmin(t, AdminConfig{Token: testToken}, newTestStore(t))
	for _, path := range []string{"/metrics", "/"} {
		if resp, _, body := call(t, "GET", base+path, "Bearer "+testToken, "", ""); resp.StatusCode != 404 {
			t.Errorf("GET %s without Metrics: %d %s, want 404", path, resp.StatusCode, body)
		}
	}
}

func TestNewMetrics(t *testing.T) {
	st := newTestStore(t)
	tests := []struct {
		desc    string
		cfg     MetricsConfig
		st      store.Store
		noLog   bool
		wantErr string
	}{
		{desc: "defaults", st: st},
		{desc: "nil store", wantErr: "nil store"},
		{desc: "nil logger", st: st, noLog: true, wantErr: "nil logger"},
		{desc: "negative interval", st: st, cfg: MetricsConfig{RefreshInterval: -time.Second}, wantErr: "RefreshInterval"},
		{desc: "negative failing limit", st: st, cfg: MetricsConfig{FailingLimit: -1}, wantErr: "FailingLimit"},
		{desc: "negative soonest limit", st: st, cfg: MetricsConfig{SoonestLimit: -1}, wantErr: "SoonestLimit"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			logger := testLogger(t)
			if tc.noLog {
				logger = nil
			}
			m, err := NewMetrics(tc.cfg, tc.st, logger)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if m.cfg.RefreshInterval != DefaultRefreshInterval || m.cfg.FailingLimit != DefaultFailingLimit ||
					m.cfg.SoonestLimit != DefaultSoonestLimit || m.cfg.Registry == nil || m.cfg.Now == nil {
					t.Errorf("defaults not filled: %+v", m.cfg)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("err = %v, want one naming %q", err, tc.wantErr)
			}
		})
	}
	// A registry used twice: the second Metrics would collide.
	m, err := NewMetrics(MetricsConfig{}, st, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics(MetricsConfig{Registry: m.cfg.Registry}, st, testLogger(t)); err == nil {
		t.Error("a second Metrics on the same registry was accepted")
	}
}

// TestInventory checks one scan: the limits of the kept lists, their
// order, the expiry windows at their edges, and the state of the names
// behind the soonest certificates.
func TestInventory(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	st := newTestStore(t)
	var ds []*store.Domain
	for i, state := range []store.State{store.StateFailing, store.StateFailing, store.StateFailing, store.StatePending, store.StateValid} {
		ds = append(ds, &store.Domain{Name: fmt.Sprintf("n%d.example.com", i), State: state, Failures: i + 1,
			FailingSince: now.Add(-time.Duration(i) * time.Hour), LastError: strings.Repeat("é", maxErrorText),
			NextAttempt: now.Add(time.Duration(i-2) * time.Minute)})
	}
	if _, _, err := st.AddDomains(ctx, ds); err != nil {
		t.Fatal(err)
	}
	for name, left := range map[string]time.Duration{
		"n4.example.com": 7 * 24 * time.Hour, // exactly 7 days: within 7
		"x.example.com":  7*24*time.Hour + time.Second,
		"y.example.com":  14 * 24 * time.Hour,
		"z.example.com":  0, // expires now: expired
		"far.example":    400 * 24 * time.Hour,
	} {
		putCert(t, st, fakeCert(name, now.Add(left)))
	}
	inv, err := scanInventory(ctx, st, now, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	if inv.Domains != 5 || inv.States[store.StateFailing] != 3 || inv.States[store.StatePending] != 1 || inv.States[store.StateValid] != 1 {
		t.Errorf("counts: %d domains, states %v", inv.Domains, inv.States)
	}
	// Next attempts at -2m, -1m, 0, +1m, +2m: three are due.
	if inv.Due != 3 {
		t.Errorf("due %d, want 3", inv.Due)
	}
	if len(inv.Failing) != 2 || inv.Failing[0].Name != "n2.example.com" || inv.Failing[1].Name != "n1.example.com" {
		t.Errorf("failing kept %+v, want n2 then n1 (failing longest first)", inv.Failing)
	}
	if e := inv.Failing[0].LastError; len(e) > maxErrorText+len("…") || !strings.HasSuffix(e, "é…") {
		t.Errorf("long error kept as %d bytes ending %q, want it cut at a rune boundary", len(e), e[len(e)-8:])
	}
	if inv.Certificates != 5 || inv.Expired != 1 || inv.Expiring7d != 1 || inv.Expiring14d != 3 {
		t.Errorf("certificates %d, expired %d, 7d %d, 14d %d; want 5, 1, 1, 3", inv.Certificates, inv.Expired, inv.Expiring7d, inv.Expiring14d)
	}
	var got []string
	for _, c := range inv.Soonest {
		got = append(got, c.ID+"="+string(c.State))
	}
	if want := "z.example.com=,n4.example.com=valid,x.example.com="; strings.Join(got, ",") != want {
		t.Errorf("soonest %v, want %s", got, want)
	}
}

func TestSmallest(t *testing.T) {
	tests := []struct {
		desc  string
		limit int
		in    []int
		want  []int
	}{
		{desc: "fewer than the limit", limit: 3, in: []int{5, 1}, want: []int{1, 5}},
		{desc: "many", limit: 3, in: []int{9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 10}, want: []int{0, 1, 2}},
		{desc: "duplicates", limit: 2, in: []int{2, 2, 1, 1, 3}, want: []int{1, 1}},
		{desc: "none", limit: 2},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			s := smallest[int]{limit: tc.limit, cmp: func(a, b int) int { return a - b }}
			for _, v := range tc.in {
				s.add(v)
			}
			if got := s.sorted(); fmt.Sprint(got) != fmt.Sprint(tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// TestMetricsRunRefreshes checks that Run scans at once and stops with
// its context.
func TestMetricsRunRefreshes(t *testing.T) {
	st := newTestStore(t)
	putCert(t, st, fakeCert("a.example.com", time.Now().Add(time.Hour)))
	m := newTestMetrics(t, st, time.Now)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		m.Run(ctx)
		close(done)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for m.Inventory() == nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if inv := m.Inventory(); inv == nil || inv.Expiring7d != 1 {
		t.Fatalf("inventory after Run: %+v", inv)
	}
}

// The store's record cache is exported: a name looked up twice is one
// miss, then one hit, from the fast path.
func TestMetricsRecordCache(t *testing.T) {
	st := newTestStore(t)
	putCert(t, st, fakeCert("a.example.com", time.Now().Add(time.Hour)))
	for range 2 {
		if _, err := st.LookupCertificate(context.Background(), "a.example.com"); err != nil {
			t.Fatal(err)
		}
	}
	// On a fleet host the inventory reads the fleet's database, which has
	// no cache and no files here; the local copy, which lookups read, has.
	for _, host := range []struct {
		desc      string
		inventory store.Store
		cfg       MetricsConfig
	}{
		{"single host", st, MetricsConfig{}},
		{"fleet host", pagedOnly{st}, MetricsConfig{Local: st}},
	} {
		t.Run(host.desc, func(t *testing.T) {
			m, err := NewMetrics(host.cfg, host.inventory, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			base := startAdmin(t, AdminConfig{Token: testToken, Metrics: m}, st)
			mfs := scrape(t, base)
			for _, tc := range []struct {
				name   string
				labels []string
				check  func(float64) bool
			}{
				{"certserver_record_cache_hits_total", nil, func(v float64) bool { return v == 1 }},
				{"certserver_record_cache_misses_total", nil, func(v float64) bool { return v == 1 }},
				{"certserver_record_cache_fast_hits_total", nil, func(v float64) bool { return v == 1 }},
				{"certserver_record_cache_records", nil, func(v float64) bool { return v == 1 }},
				{"certserver_record_cache_fast_entries", nil, func(v float64) bool { return v == 0 }},
				{"certserver_record_cache_bytes", []string{"part", "used"}, func(v float64) bool { return v > 0 && v < 4096 }},
				{"certserver_record_cache_bytes", []string{"part", "size"}, func(v float64) bool { return v == float64(store.DefaultRecordCacheSize) }},
				{"certserver_store_size_bytes", []string{"part", "vlog"}, func(v float64) bool { return v >= 0 }},
			} {
				if got, ok := value(mfs, tc.name, tc.labels...); !ok || !tc.check(got) {
					t.Errorf("%s%v = %v (exported: %v)", tc.name, tc.labels, got, ok)
				}
			}
		})
	}
}
