package certserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
)

// MetricsConfig configures Metrics. The zero value of every field means
// its default.
type MetricsConfig struct {
	// Registry receives every metric: the ones Metrics makes and whatever
	// the caller registers next to them (the renewer's). NewMetrics
	// registers the Go runtime and process collectors into it. Default: a
	// new registry; never the global default one.
	Registry *prometheus.Registry
	// RefreshInterval is the shortest time between two inventory scans of
	// the store. Default 1 minute. A scan that takes longer than a
	// twentieth of it stretches the wait to 20 times its duration, so
	// that scanning costs at most about 5% of one CPU whatever the size
	// of the store.
	RefreshInterval time.Duration
	// FailingLimit is how many failing names an Inventory keeps, those
	// failing longest first. Default 100.
	FailingLimit int
	// SoonestLimit is how many of the certificates that expire soonest an
	// Inventory keeps. Default 20.
	SoonestLimit int
	// Now returns the current time; tests set it. Default time.Now.
	Now func() time.Time
	// Fleet, set on a fleet host ([fleet]), adds the certserver_fleet_*
	// families (metrics_fleet.go). Default nil: a single host.
	Fleet Fleet
	// Local is this host's own store, whose files and record cache the
	// certserver_store_size_bytes and certserver_record_cache_* families
	// describe when it reports them (Sizer, RecordCacher): on a fleet host
	// the local copy, while the inventory scans the fleet's database.
	// Default: the store NewMetrics is given.
	Local store.Store
}

// Defaults of MetricsConfig.
const (
	DefaultRefreshInterval = time.Minute
	DefaultFailingLimit    = 100
	DefaultSoonestLimit    = 20
)

// refreshCostFactor is how many times its own duration the wait after a
// scan lasts at least.
const refreshCostFactor = 20

func (cfg MetricsConfig) withDefaults() (MetricsConfig, error) {
	switch {
	case cfg.RefreshInterval < 0:
		return cfg, fmt.Errorf("RefreshInterval %v is negative", cfg.RefreshInterval)
	case cfg.FailingLimit < 0:
		return cfg, fmt.Errorf("FailingLimit %d is negative", cfg.FailingLimit)
	case cfg.SoonestLimit < 0:
		return cfg, fmt.Errorf("SoonestLimit %d is negative", cfg.SoonestLimit)
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.RefreshInterval == 0 {
		cfg.RefreshInterval = DefaultRefreshInterval
	}
	if cfg.FailingLimit == 0 {
		cfg.FailingLimit = DefaultFailingLimit
	}
	if cfg.SoonestLimit == 0 {
		cfg.SoonestLimit = DefaultSoonestLimit
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return cfg, nil
}

// Sizer is implemented by stores that can tell how much disk they take.
// Size must be cheap (no scan of the data): it is called on every scrape
// of /metrics. lsm is the bytes of the sorted tables holding the records,
// vlog the bytes of the value log.
type Sizer interface {
	Size() (lsm, vlog int64)
}

// Metrics is the sidecar's monitoring: the Prometheus metrics the admin
// API serves on GET /metrics and the inventory its status page (GET /)
// shows.
//
// The inventory counts managed names by state, the names due, the
// certificates expiring soon, and keeps the failing names and the
// certificates that expire soonest. Counting them means reading every
// record, which at a million names takes seconds, so neither a scrape
// nor a page view does it: Run scans the store in the background every
// RefreshInterval (longer for a large store, see MetricsConfig) and both
// read the last complete scan. Its time is exported
// (certserver_inventory_timestamp_seconds) and shown on the page.
//
// The families it registers:
//
//	certserver_domains{state}                     managed names by state
//	certserver_queue_depth                        names due now, in flight included
//	certserver_certificates                       certificates stored
//	certserver_certificates_expired               certificates past their expiry
//	certserver_certificates_expiring{within}      expiring within 7d or 14d
//	certserver_inventory_timestamp_seconds        when the last inventory began
//	certserver_inventory_duration_seconds         how long it took
//	certserver_inventory_errors_total             scans that failed
//	certserver_cert_requests_total{code}          certificate endpoint answers
//	certserver_cert_request_duration_seconds      their latency (histogram)
//	certserver_cert_key_errors_total              lookups whose private key could
//	                                              not be decrypted (answered 500)
//	certserver_store_size_bytes{part}             store size on disk (lsm, vlog),
//	                                              when the store is a Sizer
//	certserver_record_cache_*                     the store's record cache, when
//	                                              it is a RecordCacher (metrics_recordcache.go)
//	certserver_fleet_*{host}                      a fleet host's database and local
//	                                              copy, when Fleet is set (metrics_fleet.go)
//	go_*, process_*                               Go runtime and process
//
// Give the same Metrics to CertEndpointConfig.Metrics and
// AdminConfig.Metrics, register the renewer's metrics into Registerer,
// and run Run. Its methods are safe for concurrent use.
type Metrics struct {
	cfg   MetricsConfig
	store store.Store
	log   *slog.Logger

	inv       atomic.Pointer[Inventory]
	refreshMu sync.Mutex // one scan at a time
	scanErrs  prometheus.Counter

	certCodes    [600]prometheus.Counter // the answers the endpoint gives, resolved once
	certRequests *prometheus.CounterVec
	certDuration prometheus.Histogram
	certKeyErrs  prometheus.Counter

	handler fasthttp.RequestHandler
}

// certCodes are the statuses the certificate endpoint answers with; their
// counters exist, at 0, from the start.
var certCodes = []int{
	fasthttp.StatusOK, fasthttp.StatusBadRequest, fasthttp.StatusNotFound,
	fasthttp.StatusMethodNotAllowed, fasthttp.StatusInternalServerError,
}

// NewMetrics returns the metrics of the sidecar over st, configured by cfg
// with its zero fields set to their defaults, registered into
// cfg.Registry. It does not scan the store yet: call Run (or Refresh).
func NewMetrics(cfg MetricsConfig, st store.Store, logger *slog.Logger) (*Metrics, error) {
	if st == nil {
		return nil, errors.New("metrics: nil store")
	}
	if logger == nil {
		return nil, errors.New("metrics: nil logger")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	m := &Metrics{
		cfg:   cfg,
		store: st,
		log:   logger.With("subsystem", "metrics"),
		scanErrs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "certserver_inventory_errors_total",
			Help: "Inventory scans of the store that failed; the previous inventory stays in use.",
		}),
		certRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certserver_cert_requests_total",
			Help: "Answers of the certificate endpoint (nginx's cache misses), by HTTP status: 200 served, 404 no certificate (fallback served), 400 invalid name, 500 store failure.",
		}, []string{"code"}),
		certKeyErrs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "certserver_cert_key_errors_total",
			Help: "Certificate endpoint lookups whose stored private key could not be decrypted (sealed under a key the key-encryption key file does not hold, tampered with, or no key file configured); each was answered 500 and logged, never served.",
		}),
		certDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "certserver_cert_request_duration_seconds",
			Help:    "Time the certificate endpoint takes to answer, from the parsed request to the written answer.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
	}
	for _, code := range certCodes {
		m.certCodes[code] = m.certRequests.WithLabelValues(strconv.Itoa(code))
	}
	cs := []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		inventoryCollector{m},
		m.scanErrs, m.certRequests, m.certDuration, m.certKeyErrs,
	}
	local := cfg.Local
	if local == nil {
		local = st
	}
	if sz, ok := store.As[Sizer](local); ok {
		cs = append(cs, sizeCollector{sz})
	}
	if rc, ok := store.As[RecordCacher](local); ok {
		cs = append(cs, recordCacheCollector{rc})
	}
	if cfg.Fleet != nil {
		cs = append(cs, fleetCollector{cfg.Fleet})
	}
	for _, c := range cs {
		if err := cfg.Registry.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	m.handler = fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{
		ErrorLog:      promLogger{m.log},
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      cfg.Registry,
	}))
	return m, nil
}

// Registerer is where other parts register their metrics (the renewer's
// renewer.NewPrometheusMetrics), to be served with these.
func (m *Metrics) Registerer() prometheus.Registerer { return m.cfg.Registry }

// Inventory returns the last complete inventory, nil before the first.
// The caller must not change it.
func (m *Metrics) Inventory() *Inventory { return m.inv.Load() }

// fresh reports whether inv is as recent as the refresh schedule makes it.
func (m *Metrics) fresh(inv *Inventory, now time.Time) bool {
	return inventoryFresh(inv, now, m.cfg.RefreshInterval)
}

// inventoryFresh reports whether inv, from scans repeated every interval
// or 20 times their duration, is younger than three of them: older, scans
// are failing.
func inventoryFresh(inv *Inventory, now time.Time, interval time.Duration) bool {
	return now.Sub(inv.At) <= 3*max(interval, refreshCostFactor*inv.Took)
}

// Run scans the store at once and then again and again, waiting between
// two scans RefreshInterval or 20 times the last scan's duration,
// whichever is longer, until ctx is done. A failed scan is logged and
// counted, and the previous inventory stays.
func (m *Metrics) Run(ctx context.Context) {
	for {
		start := time.Now()
		if err := m.Refresh(ctx); err != nil && ctx.Err() == nil {
			m.log.Error("inventory scan failed", "error", err)
		}
		wait := max(m.cfg.RefreshInterval, refreshCostFactor*time.Since(start))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Refresh scans the store now and makes the result the current
// inventory. Concurrent calls scan one after the other.
func (m *Metrics) Refresh(ctx context.Context) error {
	m.refreshMu.Lock()
	defer m.refreshMu.Unlock()
	inv, err := scanInventory(ctx, m.store, m.cfg.Now(), m.cfg.FailingLimit, m.cfg.SoonestLimit)
	if err != nil {
		m.scanErrs.Inc()
		return fmt.Errorf("inventory: %w", err)
	}
	m.inv.Store(inv)
	if inv.Took > m.cfg.RefreshInterval/refreshCostFactor {
		m.log.Info("inventory scan is slow; scanning less often", "took", inv.Took.Round(time.Millisecond),
			"domains", inv.Domains, "certificates", inv.Certificates, "next_in", (refreshCostFactor * inv.Took).Round(time.Second))
	} else {
		m.log.Debug("inventory scanned", "took", inv.Took.Round(time.Millisecond),
			"domains", inv.Domains, "certificates", inv.Certificates)
	}
	return nil
}

// observeCert counts one answer of the certificate endpoint. It is on
// nginx's miss path: two atomic additions and a bucket search, no
// allocation for the statuses the endpoint gives.
func (m *Metrics) observeCert(code int, d time.Duration) {
	m.certDuration.Observe(d.Seconds())
	if code >= 0 && code < len(m.certCodes) && m.certCodes[code] != nil {
		m.certCodes[code].Inc()
		return
	}
	m.certRequests.WithLabelValues(strconv.Itoa(code)).Inc()
}

// observeKeyError counts a lookup whose private key could not be
// decrypted.
func (m *Metrics) observeKeyError() { m.certKeyErrs.Inc() }

// serveMetrics answers GET /metrics in the Prometheus text format (or
// OpenMetrics, or gzipped, as the scraper asks).
func (m *Metrics) serveMetrics(rc *fasthttp.RequestCtx) {
	m.handler(rc)
	rc.Response.Header.Set("Cache-Control", "no-store")
}

// inventoryCollector exports the current inventory. Before the first scan
// it exports nothing but the error counter, which is registered on its
// own.
type inventoryCollector struct{ m *Metrics }

var (
	descDomains = prometheus.NewDesc("certserver_domains",
		"Managed names by state (pending, issuing, valid, renewing, failing, given_up, removed), at the last inventory.",
		[]string{"state"}, nil)
	descQueueDepth = prometheus.NewDesc("certserver_queue_depth",
		"Managed names due now (next attempt at or before the last inventory), those being worked on included: the renewer's backlog.",
		nil, nil)
	descCerts = prometheus.NewDesc("certserver_certificates",
		"Certificates stored, at the last inventory.", nil, nil)
	descExpired = prometheus.NewDesc("certserver_certificates_expired",
		"Certificates stored past their expiry, at the last inventory; still served until replaced or deleted.", nil, nil)
	descExpiring = prometheus.NewDesc("certserver_certificates_expiring",
		"Certificates stored that expire within 7 or 14 days of the last inventory (expired ones not included).",
		[]string{"within"}, nil)
	descInvTime = prometheus.NewDesc("certserver_inventory_timestamp_seconds",
		"Unix time the last complete inventory of the store began; the inventory metrics are as of then.", nil, nil)
	descInvTook = prometheus.NewDesc("certserver_inventory_duration_seconds",
		"How long the last complete inventory of the store took.", nil, nil)
)

func (c inventoryCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDomains, descQueueDepth, descCerts, descExpired, descExpiring, descInvTime, descInvTook} {
		ch <- d
	}
}

func (c inventoryCollector) Collect(ch chan<- prometheus.Metric) {
	inv := c.m.inv.Load()
	if inv == nil {
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, s := range store.States {
		gauge(descDomains, float64(inv.States[s]), string(s))
	}
	for s, n := range inv.States {
		if !knownState(s) {
			gauge(descDomains, float64(n), string(s))
		}
	}
	gauge(descQueueDepth, float64(inv.Due))
	gauge(descCerts, float64(inv.Certificates))
	gauge(descExpired, float64(inv.Expired))
	gauge(descExpiring, float64(inv.Expiring7d), "7d")
	gauge(descExpiring, float64(inv.Expiring14d), "14d")
	gauge(descInvTime, float64(inv.At.UnixNano())/1e9)
	gauge(descInvTook, inv.Took.Seconds())
}

func knownState(s store.State) bool {
	for _, k := range store.States {
		if s == k {
			return true
		}
	}
	return false
}

// sizeCollector exports the store's size at every scrape.
type sizeCollector struct{ s Sizer }

var descStoreSize = prometheus.NewDesc("certserver_store_size_bytes",
	"Size of the store on disk, by part: lsm (the sorted tables holding the records) and vlog (the value log).",
	[]string{"part"}, nil)

func (c sizeCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descStoreSize }

func (c sizeCollector) Collect(ch chan<- prometheus.Metric) {
	lsm, vlog := c.s.Size()
	ch <- prometheus.MustNewConstMetric(descStoreSize, prometheus.GaugeValue, float64(lsm), "lsm")
	ch <- prometheus.MustNewConstMetric(descStoreSize, prometheus.GaugeValue, float64(vlog), "vlog")
}

// promLogger passes promhttp's errors to slog.
type promLogger struct{ log *slog.Logger }

func (l promLogger) Println(v ...any) {
	l.log.Error("serving metrics", "error", fmt.Sprint(v...))
}
