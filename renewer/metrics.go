package renewer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics receives what the renewer's orders do, for monitoring. The
// renewer calls OrderStarted when a worker hands an order to the Issuer
// and OrderDone exactly once for every OrderStarted, from the worker's
// goroutine; OrderRefused when a check refused a name before any order
// was sent. Implementations must return at once and be safe for
// concurrent use. PrometheusMetrics is the implementation serve uses.
type Metrics interface {
	// OrderStarted reports that an order to ca is under way.
	OrderStarted(ca string)
	// OrderDone reports how an order ended.
	OrderDone(o OrderOutcome)
	// OrderRefused reports that the pre-flight check refused a name with
	// err (a *PreflightError): the name failed, nothing was sent to ca.
	OrderRefused(ca string, err error)
}

// OrderOutcome is how one order ended.
type OrderOutcome struct {
	// CA names the CA the order went to: its CA.Name, by default the
	// Issuer's directory URL when it has a Directory() string method
	// (ACMEIssuer does), else "".
	CA string
	// Renewal is true when the order replaces a certificate that still
	// serves the name, false for a first order (or a replacement of an
	// expired certificate).
	Renewal bool
	// Took is the time from the order's start to its outcome, storing the
	// certificate included.
	Took time.Duration
	// Err is nil when the certificate was obtained and stored. Otherwise
	// it is the Issuer's error (an *ACMEError from ACMEIssuer) or the
	// store's.
	Err error
	// Abandoned is true when the renewer stopped (its context ended)
	// before the order could finish; Err then says where it stopped. An
	// abandoned order is not a failure of the CA: its name stays due and
	// the next start orders it again.
	Abandoned bool
}

// caOf returns the directory URL of the CA behind an issuer, "" when the
// issuer does not say.
func caOf(is Issuer) string {
	if d, ok := is.(interface{ Directory() string }); ok {
		return d.Directory()
	}
	return ""
}

// orderStarted tells the configured Metrics, if any, that an order to
// the CA named ca started.
func (r *Renewer) orderStarted(ca string) {
	if r.cfg.Metrics != nil {
		r.cfg.Metrics.OrderStarted(ca)
	}
}

// orderRefused tells the configured Metrics, if any, that a check refused
// a name for the CA named ca before an order was sent.
func (r *Renewer) orderRefused(ca string, err error) {
	if r.cfg.Metrics != nil {
		r.cfg.Metrics.OrderRefused(ca, err)
	}
}

// orderDone tells the configured Metrics, if any, how an order to the CA
// named ca that began at start ended. ctx is the renewer's: when it has
// ended, a failed order was abandoned rather than failed.
func (r *Renewer) orderDone(ctx context.Context, ca string, start time.Time, renewal bool, err error) {
	if r.cfg.Metrics == nil {
		return
	}
	r.cfg.Metrics.OrderDone(OrderOutcome{
		CA:        ca,
		Renewal:   renewal,
		Took:      time.Since(start),
		Err:       err,
		Abandoned: err != nil && ctx.Err() != nil,
	})
}

// The results of certserver_orders_total.
const (
	resultIssued    = "issued"
	resultFailed    = "failed"
	resultRefused   = "refused"
	resultAbandoned = "abandoned"
)

// PrometheusMetrics counts the renewer's orders in Prometheus metrics:
//
//	certserver_orders_in_flight{ca}                 gauge: orders under way
//	certserver_orders_total{ca,result}              counter: orders ended, by result
//	                                                (issued, failed, abandoned; refused:
//	                                                not sent, the pre-flight check failed)
//	certserver_order_failures_total{ca,kind,problem} counter: failed orders by
//	                                                kind (transient, permanent,
//	                                                rate_limited) and ACME problem
//	certserver_order_duration_seconds{ca}           histogram: time to issue or fail
//
// problem is the short ACME problem type of the failure ("caa", "dns",
// "rateLimited", … RFC 8555 section 6.7), "other" for a type outside
// the RFCs, "none" when the failure was not a problem document from the
// CA (network, timeout, the store), and "preflight_resolve",
// "preflight_targets" or "preflight_caa" when the pre-flight check refused
// the name (see ErrorType). It implements Metrics and is safe for
// concurrent use.
type PrometheusMetrics struct {
	inFlight *prometheus.GaugeVec
	orders   *prometheus.CounterVec
	failures *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

var _ Metrics = (*PrometheusMetrics)(nil)

// NewPrometheusMetrics returns PrometheusMetrics registered into reg. It
// fails when reg is nil or already holds metrics of the same names.
func NewPrometheusMetrics(reg prometheus.Registerer) (*PrometheusMetrics, error) {
	if reg == nil {
		return nil, errors.New("renewer metrics: nil registerer")
	}
	m := &PrometheusMetrics{
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "certserver_orders_in_flight",
			Help: "Certificate orders under way, by CA directory URL.",
		}, []string{"ca"}),
		orders: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certserver_orders_total",
			Help: "Certificate orders that ended, by CA and result: issued (obtained and stored), failed, refused (not sent: the pre-flight DNS check failed), abandoned (certserver was stopping).",
		}, []string{"ca", "result"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certserver_order_failures_total",
			Help: "Failed certificate orders, by CA, kind (transient, permanent, rate_limited) and short ACME problem type (none: not a problem document from the CA; preflight_STEP: refused by the pre-flight DNS check).",
		}, []string{"ca", "kind", "problem"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "certserver_order_duration_seconds",
			Help:    "Time from the start of a certificate order to the stored certificate or the failure, by CA.",
			Buckets: []float64{0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300},
		}, []string{"ca"}),
	}
	for _, c := range []prometheus.Collector{m.inFlight, m.orders, m.failures, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("renewer metrics: %w", err)
		}
	}
	return m, nil
}

// OrderStarted implements Metrics. It also makes every result of
// certserver_orders_total for ca visible at 0, so that rate() and
// increase() see the first failure.
func (m *PrometheusMetrics) OrderStarted(ca string) {
	m.inFlight.WithLabelValues(ca).Inc()
	for _, r := range []string{resultIssued, resultFailed, resultRefused, resultAbandoned} {
		m.orders.WithLabelValues(ca, r)
	}
}

// OrderDone implements Metrics.
func (m *PrometheusMetrics) OrderDone(o OrderOutcome) {
	m.inFlight.WithLabelValues(o.CA).Dec()
	switch {
	case o.Err == nil:
		m.orders.WithLabelValues(o.CA, resultIssued).Inc()
	case o.Abandoned:
		m.orders.WithLabelValues(o.CA, resultAbandoned).Inc()
		return
	default:
		m.orders.WithLabelValues(o.CA, resultFailed).Inc()
		kind, problem := ErrorType(o.Err)
		m.failures.WithLabelValues(o.CA, kind, problem).Inc()
	}
	m.duration.WithLabelValues(o.CA).Observe(o.Took.Seconds())
}

// OrderRefused implements Metrics: a refused order counts as an order
// with result refused and as a failure of its kind and pre-flight step.
func (m *PrometheusMetrics) OrderRefused(ca string, err error) {
	m.orders.WithLabelValues(ca, resultRefused).Inc()
	kind, problem := ErrorType(err)
	m.failures.WithLabelValues(ca, kind, problem).Inc()
}

// ErrorType names the type of an order's error for metrics: its kind
// ("transient", "permanent", "rate_limited") and its short ACME problem
// type ("caa", "dns", "rateLimited", …), "other" for a problem type
// outside RFC 8555 and RFC 9773, or "none" when err holds no problem
// document. A *PreflightError (the check refused the name before any
// order was sent) is its kind with the problem "preflight_" followed by
// its step ("preflight_caa"). Any other error is "permanent" when it says
// so (Permanent() bool), "rate_limited" when it asks for a wait
// (RetryAfter() time.Duration), else "transient". The set of values is
// bounded, as label values must be.
func ErrorType(err error) (kind, problem string) {
	var ae *ACMEError
	if errors.As(err, &ae) {
		return ae.Kind.String(), ae.problemLabel()
	}
	var pe *PreflightError
	if errors.As(err, &pe) {
		switch pe.Step {
		case StepResolve, StepTargets, StepCAA, StepCNAME, StepChallenge:
			return pe.Kind.String(), "preflight_" + pe.Step
		}
		return pe.Kind.String(), "preflight"
	}
	var p permanent
	var ra retryAfter
	switch {
	case errors.As(err, &p) && p.Permanent():
		return KindPermanent.String(), "none"
	case errors.As(err, &ra) && ra.RetryAfter() > 0:
		return KindRateLimited.String(), "none"
	}
	return KindTransient.String(), "none"
}

// caCollector exports the renewer's CAStatus at every scrape.
type caCollector struct {
	r                                     *Renewer
	deferred, polls, pollErrors, moved    *prometheus.Desc
	resting, tokens, blocked, bucketsKept *prometheus.Desc
}

// NewCACollector returns a Prometheus collector of r's CAs, read from
// CAStatus at every scrape (a few map walks under the Limiters' locks,
// bounded by the buckets spent lately):
//
//	certserver_orders_deferred_total{ca}            counter: orders the account's limits held back
//	certserver_ari_polls_total{ca}                  counter: renewal information requests (RFC 9773)
//	certserver_ari_poll_errors_total{ca}            counter: those that failed
//	certserver_ari_windows_moved_total{ca}          counter: polls that moved a renewal
//	certserver_ca_resting{ca}                       gauge: 1 while the CA rests after failures
//	certserver_rate_limit_tokens{ca,limit}          gauge: orders the account-wide bucket allows now
//	certserver_rate_limit_blocked_buckets{ca,limit} gauge: buckets holding less than a token
//	certserver_rate_limit_buckets{ca,limit}         gauge: buckets below full
//
// limit is the LimitID. Unlimited account-wide buckets have no tokens
// series.
func NewCACollector(r *Renewer) prometheus.Collector {
	ca := []string{"ca"}
	cl := []string{"ca", "limit"}
	return &caCollector{
		r:           r,
		deferred:    prometheus.NewDesc("certserver_orders_deferred_total", "Certificate orders the CA account's rate limits held back before they were sent, by CA.", ca, nil),
		polls:       prometheus.NewDesc("certserver_ari_polls_total", "Renewal information (ARI, RFC 9773) requests, by CA.", ca, nil),
		pollErrors:  prometheus.NewDesc("certserver_ari_poll_errors_total", "Renewal information requests that failed, by CA.", ca, nil),
		moved:       prometheus.NewDesc("certserver_ari_windows_moved_total", "Renewal information polls that moved a certificate's renewal because the CA's window moved, by CA.", ca, nil),
		resting:     prometheus.NewDesc("certserver_ca_resting", "1 while the CA rests after repeated failures of its own (other CAs go first), else 0.", ca, nil),
		tokens:      prometheus.NewDesc("certserver_rate_limit_tokens", "Orders the CA account's account-wide rate-limit bucket allows now, by CA and limit.", cl, nil),
		blocked:     prometheus.NewDesc("certserver_rate_limit_blocked_buckets", "Rate-limit buckets holding less than one token (orders that need them wait), by CA and limit.", cl, nil),
		bucketsKept: prometheus.NewDesc("certserver_rate_limit_buckets", "Rate-limit buckets below full, by CA and limit.", cl, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *caCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.deferred, c.polls, c.pollErrors, c.moved, c.resting, c.tokens, c.blocked, c.bucketsKept} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *caCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.r.CAStatus() {
		counter := func(d *prometheus.Desc, v int64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), s.Name)
		}
		counter(c.deferred, s.Counts.Deferred)
		if s.OffersARI {
			counter(c.polls, s.Counts.Polls)
			counter(c.pollErrors, s.Counts.PollErrors)
			counter(c.moved, s.Counts.WindowsMoved)
		}
		resting := 0.0
		if s.Resting {
			resting = 1
		}
		ch <- prometheus.MustNewConstMetric(c.resting, prometheus.GaugeValue, resting, s.Name)
		for _, l := range s.Limits {
			id := string(l.Limit)
			if l.Scope == "account" && l.Burst >= 0 && len(l.Buckets) > 0 {
				ch <- prometheus.MustNewConstMetric(c.tokens, prometheus.GaugeValue, l.Buckets[0].Tokens, s.Name, id)
			}
			ch <- prometheus.MustNewConstMetric(c.blocked, prometheus.GaugeValue, float64(l.Blocked), s.Name, id)
			ch <- prometheus.MustNewConstMetric(c.bucketsKept, prometheus.GaugeValue, float64(l.Tracked), s.Name, id)
		}
	}
}
