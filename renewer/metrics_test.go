package renewer

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/renewer/dnstest"
	"github.com/certserver/certserver/renewer/ratelimit"
	"github.com/certserver/certserver/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestErrorType(t *testing.T) {
	now := time.Now()
	tests := []struct {
		desc          string
		err           error
		kind, problem string
	}{
		{desc: "caa refusal", err: classify("a.test", validationProblem("caa", "CAA forbids"), now),
			kind: "permanent", problem: "caa"},
		{desc: "nxdomain", err: classify("a.test", validationProblem("dns", "NXDOMAIN"), now),
			kind: "permanent", problem: "dns"},
		{desc: "rate limit", err: classify("a.test", answerProblem("rateLimited", "too many", 429), now),
			kind: "rate_limited", problem: "rateLimited"},
		{desc: "server error", err: classify("a.test", answerProblem("serverInternal", "oops", 500), now),
			kind: "transient", problem: "serverInternal"},
		{desc: "problem type outside the RFCs", err: classify("a.test", validationProblem("somethingNew", "new"), now),
			kind: "permanent", problem: "other"},
		{desc: "no problem document", err: classify("a.test", errors.New("dial tcp: connection refused"), now),
			kind: "transient", problem: "none"},
		{desc: "wrapped ACMEError", err: fmt.Errorf("order: %w", classify("a.test", validationProblem("caa", "no"), now)),
			kind: "permanent", problem: "caa"},
		{desc: "pre-flight refusal", err: &PreflightError{Name: "a.test", Step: StepCAA, Kind: KindPermanent, Reason: "CAA forbids"},
			kind: "permanent", problem: "preflight_caa"},
		{desc: "pre-flight could not read DNS", err: fmt.Errorf("check: %w", &PreflightError{Name: "a.test", Step: StepResolve, Kind: KindTransient, Err: errors.New("SERVFAIL")}),
			kind: "transient", problem: "preflight_resolve"},
		{desc: "permanent error of another issuer", err: problem{detail: "refused", perm: true},
			kind: "permanent", problem: "none"},
		{desc: "wait asked by another issuer", err: problem{detail: "slow down", after: time.Minute},
			kind: "rate_limited", problem: "none"},
		{desc: "plain error (the store)", err: errors.New("write failed"),
			kind: "transient", problem: "none"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			kind, problem := ErrorType(tc.err)
			if kind != tc.kind || problem != tc.problem {
				t.Errorf("ErrorType = %q, %q; want %q, %q", kind, problem, tc.kind, tc.problem)
			}
		})
	}
}

func TestNewPrometheusMetricsRefuses(t *testing.T) {
	if _, err := NewPrometheusMetrics(nil); err == nil {
		t.Error("nil registerer accepted")
	}
	reg := prometheus.NewRegistry()
	if _, err := NewPrometheusMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := NewPrometheusMetrics(reg); err == nil || !strings.Contains(err.Error(), "renewer metrics") {
		t.Errorf("second registration: %v, want an error", err)
	}
}

// directoryIssuer is a scriptedIssuer that names its CA, as ACMEIssuer
// does.
type directoryIssuer struct {
	*scriptedIssuer
	dir string
}

func (d directoryIssuer) Directory() string { return d.dir }

// TestPrometheusMetricsCountsOrders runs orders through the real worker
// code and a real store: one refused by the CA (caa), one issued, one
// renewal issued, one abandoned because the renewer stops during it, and
// checks the counters, the in-flight gauge and the duration histogram.
func TestPrometheusMetricsCountsOrders(t *testing.T) {
	const ca = "https://ca.example.test/directory"
	st := openStore(t)
	clock := newFakeClock(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
	caaErr := classify("refused.example.test", validationProblem("caa", "CAA record forbids issuance"), clock.Now())
	iss := &scriptedIssuer{errs: []error{caaErr}, life: 90 * 24 * time.Hour,
		notAfter: func() time.Time { return clock.Now().Add(90 * 24 * time.Hour) }}
	reg := prometheus.NewRegistry()
	pm, err := NewPrometheusMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	var inFlightDuringOrder float64
	iss.during = func(Order) { inFlightDuringOrder = testutil.ToFloat64(pm.inFlight.WithLabelValues(ca)) }
	r, err := New(Config{Now: clock.Now, Seed: 7, Metrics: pm, CAs: []CA{{Issuer: directoryIssuer{iss, ca}}}}, st, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	addPending(t, st, clock.Now(), "refused.example.test", "ok.example.test", "stopped.example.test")

	r.process(ctx, "refused.example.test", false)
	if inFlightDuringOrder != 1 {
		t.Errorf("certserver_orders_in_flight during an order = %v, want 1", inFlightDuringOrder)
	}
	r.process(ctx, "ok.example.test", false)
	r.process(ctx, "ok.example.test", true) // renew now: a renewal order

	// The renewer stops while the order is under way.
	sctx, stop := context.WithCancel(ctx)
	iss.during = func(Order) { stop() }
	iss.delay = time.Minute
	r.process(sctx, "stopped.example.test", false)

	want := `
# HELP certserver_order_failures_total Failed certificate orders, by CA, kind (transient, permanent, rate_limited) and short ACME problem type (none: not a problem document from the CA; preflight_STEP: refused by the pre-flight DNS check).
# TYPE certserver_order_failures_total counter
certserver_order_failures_total{ca="https://ca.example.test/directory",kind="permanent",problem="caa"} 1
# HELP certserver_orders_in_flight Certificate orders under way, by CA directory URL.
# TYPE certserver_orders_in_flight gauge
certserver_orders_in_flight{ca="https://ca.example.test/directory"} 0
# HELP certserver_orders_total Certificate orders that ended, by CA and result: issued (obtained and stored), failed, refused (not sent: the pre-flight DNS check failed), abandoned (certserver was stopping).
# TYPE certserver_orders_total counter
certserver_orders_total{ca="https://ca.example.test/directory",result="abandoned"} 1
certserver_orders_total{ca="https://ca.example.test/directory",result="failed"} 1
certserver_orders_total{ca="https://ca.example.test/directory",result="issued"} 2
certserver_orders_total{ca="https://ca.example.test/directory",result="refused"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"certserver_orders_total", "certserver_order_failures_total", "certserver_orders_in_flight"); err != nil {
		t.Error(err)
	}
	// Abandoned orders are not timed: 2 issued + 1 failed.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var timed uint64
	for _, mf := range mfs {
		if mf.GetName() == "certserver_order_duration_seconds" {
			timed = mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	if timed != 3 {
		t.Errorf("certserver_order_duration_seconds counts %d orders, want 3", timed)
	}
	if d := getDomain(t, st, "refused.example.test"); d.State != store.StateFailing {
		t.Errorf("refused name is %s, want failing", d.State)
	}
}

// recordingMetrics keeps what the renewer reports.
type recordingMetrics struct {
	started  []string
	outcomes []OrderOutcome
	refused  []error
}

func (m *recordingMetrics) OrderStarted(ca string)   { m.started = append(m.started, ca) }
func (m *recordingMetrics) OrderDone(o OrderOutcome) { m.outcomes = append(m.outcomes, o) }
func (m *recordingMetrics) OrderRefused(ca string, err error) {
	m.refused = append(m.refused, err)
}

// TestMetricsHookOutcomes checks what the renewer tells a Metrics: a
// first order and a renewal, from an issuer that does not name its CA.
func TestMetricsHookOutcomes(t *testing.T) {
	st := openStore(t)
	clock := newFakeClock(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
	iss := &scriptedIssuer{life: 90 * 24 * time.Hour, notAfter: func() time.Time { return clock.Now().Add(90 * 24 * time.Hour) }}
	m := &recordingMetrics{}
	r, err := New(Config{Now: clock.Now, Seed: 3, Metrics: m, CAs: []CA{{Issuer: iss}}}, st, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	addPending(t, st, clock.Now(), "a.example.test")
	r.process(context.Background(), "a.example.test", false)
	r.process(context.Background(), "a.example.test", true)
	if len(m.started) != 2 || len(m.outcomes) != 2 {
		t.Fatalf("%d started, %d outcomes; want 2 and 2", len(m.started), len(m.outcomes))
	}
	for i, wantRenewal := range []bool{false, true} {
		o := m.outcomes[i]
		if o.CA != "" || o.Err != nil || o.Abandoned || o.Renewal != wantRenewal || o.Took <= 0 {
			t.Errorf("outcome %d = %+v, want CA \"\", no error, renewal %v", i, o, wantRenewal)
		}
	}
}

// TestMetricsCountPreflightRefusals runs names through a real pre-flight
// check against a DNS server of the test's own: a name without DNS and
// one whose CAA forbids the CA are refused without an order, and counted
// as refused orders with their pre-flight step.
func TestMetricsCountPreflightRefusals(t *testing.T) {
	dnsSrv := dnstest.Start(t, dnstest.Options{})
	dnsSrv.SetA("ok.example.test", netip.MustParseAddr("127.0.0.1"))
	dnsSrv.SetA("caa.example.test", netip.MustParseAddr("127.0.0.1"))
	dnsSrv.SetCAA("caa.example.test", dnstest.CAA{Tag: "issue", Value: "other-ca.example"})
	pf := preflightOn(t, dnsSrv, "127.0.0.1")
	reg := prometheus.NewRegistry()
	pm, err := NewPrometheusMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	e := newGateEnv(t, ratelimit.LimitsConfig{}, Config{Preflight: pf, CAs: []CA{{CAIdentities: []string{"our-ca.example"}}}, Metrics: pm})
	names := []string{"ok.example.test", "caa.example.test", "nowhere.example.test"}
	addPending(t, e.st, e.clock.Now(), names...)
	for _, n := range names {
		e.r.process(context.Background(), n, false)
	}
	want := `
# HELP certserver_order_failures_total Failed certificate orders, by CA, kind (transient, permanent, rate_limited) and short ACME problem type (none: not a problem document from the CA; preflight_STEP: refused by the pre-flight DNS check).
# TYPE certserver_order_failures_total counter
certserver_order_failures_total{ca="",kind="permanent",problem="preflight_caa"} 1
certserver_order_failures_total{ca="",kind="permanent",problem="preflight_resolve"} 1
# HELP certserver_orders_total Certificate orders that ended, by CA and result: issued (obtained and stored), failed, refused (not sent: the pre-flight DNS check failed), abandoned (certserver was stopping).
# TYPE certserver_orders_total counter
certserver_orders_total{ca="",result="abandoned"} 0
certserver_orders_total{ca="",result="failed"} 0
certserver_orders_total{ca="",result="issued"} 1
certserver_orders_total{ca="",result="refused"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "certserver_orders_total", "certserver_order_failures_total"); err != nil {
		t.Error(err)
	}
}

// TestCACollector: the CA collector exports what CAStatus says at the
// moment of the scrape: an ARI poll, an order the limits deferred, the
// new-orders bucket's tokens, a name blocked by its failed validations.
func TestCACollector(t *testing.T) {
	clock := newFakeClock(time.Date(2026, 8, 1, 0, 0, 0, 0, time.UTC)) // newARIEnv's
	lim, err := ratelimit.NewLimiter(ratelimit.LimitsConfig{NewOrders: ratelimit.Limit{Burst: 1, Per: time.Hour}}, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	e := newARIEnv(t, Config{CAs: []CA{{Limiter: lim}}})
	e.clock = clock
	e.ca.clock = clock
	e.r.cfg.Now = clock.Now
	reg := prometheus.NewRegistry()
	if err := reg.Register(NewCACollector(e.r)); err != nil {
		t.Fatal(err)
	}
	const name = "www.example.test"
	e.issue(t, name)
	d := getDomain(t, e.st, name)
	e.clock.Set(d.NextAttempt)
	e.r.process(context.Background(), name, false) // the first poll
	if e.ca.pollCount() != 1 {
		t.Fatalf("%d polls, want 1", e.ca.pollCount())
	}
	e.issue(t, "next.example.test") // spends the one new-order token
	addPending(t, e.st, e.clock.Now(), "third.example.test")
	e.r.process(context.Background(), "third.example.test", false) // deferred: no token
	for range 5 {
		lim.AuthzFailed("bad.example.test")
	}

	const ca = `ca="https://ca.example.test/dir"`
	got, err := testutil.GatherAndCount(reg)
	if err != nil || got == 0 {
		t.Fatalf("gather: %d metrics, %v", got, err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName() + "{"
			for i, lp := range m.GetLabel() {
				if i > 0 {
					key += ","
				}
				key += lp.GetName() + `="` + lp.GetValue() + `"`
			}
			key += "}"
			switch {
			case m.Counter != nil:
				values[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				values[key] = m.Gauge.GetValue()
			}
		}
	}
	for key, want := range map[string]float64{
		"certserver_ari_polls_total{" + ca + "}":                                                                      1,
		"certserver_ari_poll_errors_total{" + ca + "}":                                                                0,
		"certserver_ari_windows_moved_total{" + ca + "}":                                                              0,
		"certserver_orders_deferred_total{" + ca + "}":                                                                1,
		"certserver_ca_resting{" + ca + "}":                                                                           0,
		"certserver_rate_limit_blocked_buckets{" + ca + `,limit="new_orders_per_account"}`:                            1,
		"certserver_rate_limit_blocked_buckets{" + ca + `,limit="authorization_failures_per_identifier"}`:             1,
		"certserver_rate_limit_buckets{" + ca + `,limit="authorization_failures_per_identifier"}`:                     1,
		"certserver_rate_limit_blocked_buckets{" + ca + `,limit="certificates_per_registered_domain"}`:                0,
		"certserver_rate_limit_buckets{" + ca + `,limit="certificates_per_registered_domain"}`:                        1,
		"certserver_rate_limit_blocked_buckets{" + ca + `,limit="consecutive_authorization_failures_per_identifier"}`: 0,
	} {
		if got, ok := values[key]; !ok || got != want {
			t.Errorf("%s = %v (exported: %v), want %v", key, got, ok, want)
		}
	}
	if tok, ok := values["certserver_rate_limit_tokens{"+ca+`,limit="new_orders_per_account"}`]; !ok || tok < 0 || tok >= 1 {
		t.Errorf("new-orders tokens %v (exported: %v), want below one", tok, ok)
	}
	if _, ok := values["certserver_rate_limit_tokens{"+ca+`,limit="new_order_requests"}`]; ok {
		t.Error("tokens exported for an unlimited bucket")
	}
}
