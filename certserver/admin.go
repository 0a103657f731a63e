package certserver

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/store"
	"github.com/valyala/fasthttp"
)

// AdminConfig configures an AdminAPI. The zero value of every field but
// Token means its default.
type AdminConfig struct {
	// Listen is the TCP address "host:port" of the admin API. Default
	// DefaultAdminListen ("127.0.0.1:9400"). It must be a loopback address
	// unless AllowNonLoopback is set.
	Listen string
	// AllowNonLoopback permits a Listen address other hosts can reach.
	// Default false: the token and private keys travel in clear text.
	AllowNonLoopback bool
	// Token is the bearer token every request but GET /healthz must present
	// (RFC 6750 section 2.1). Required: an empty token refuses to start.
	Token string
	// MaxBody is the largest request body, in bytes, of a route that takes
	// one and sets no limit of its own (POST /v1/certificates). Default
	// 1 MiB.
	MaxBody int
	// MaxDomainsBody is the largest body of POST /v1/domains, in bytes.
	// Default DefaultAdminMaxDomainsBody (64 MiB: 500,000 names fit with
	// room to spare).
	MaxDomainsBody int
	// MaxImportBatchBody is the largest body of POST
	// /v1/certificates/batch, in bytes. Default
	// DefaultAdminMaxImportBatchBody (16 MiB: api.MaxImportBatch
	// certificates of a Let's Encrypt chain and key take about 5 MiB).
	MaxImportBatchBody int
	// Scheduler is told about names added or to be renewed. Default nil:
	// issuance is off, and names wait in the store until a renewer runs.
	Scheduler Scheduler
	// Revoker revokes certificates at the CA for POST
	// /v1/domains/{name}/revoke and DELETE ...?revoke=. Default nil: those
	// answer 503.
	Revoker Revoker
	// Queue tells GET /v1/queue what the renewer is doing. Default nil:
	// the answer says issuance is off.
	Queue QueueStats
	// StateCountTTL is how long GET /v1/queue reuses its count of names by
	// state, a scan of every record. Default DefaultStateCountTTL (10s);
	// negative counts on every request.
	StateCountTTL time.Duration
	// StateScanBudget bounds the time one count of names by state may
	// scan; a store too large for it gets a lower bound that says so.
	// Default 3s (stateScanBudget).
	StateScanBudget time.Duration
	// Ready tells GET /readyz whether the sidecar can serve nginx, beyond
	// its store answering (serve checks that the certificate endpoint
	// accepts connections). Default nil: the store answering is enough.
	Ready func(ctx context.Context) error
	// Fleet, set on a fleet host ([fleet]), is served on GET /v1/fleet
	// and said on GET /readyz: the host is ready once its local copy has
	// caught up, and a line says whether the database is up. Default
	// nil: a single host; GET /v1/fleet answers 404.
	Fleet Fleet
	// HealthStore is the store GET /healthz and GET /readyz check.
	// Default the admin API's own store. A fleet host sets its local
	// copy: the shared database being down must not make the host look
	// dead or unready, since it serves from the copy.
	HealthStore store.Store
	// RequestTimeout bounds the store work of one request. Default 30s.
	RequestTimeout time.Duration
	// ReadTimeout bounds reading one request, IdleTimeout how long a
	// keep-alive connection may wait for the next one. Defaults 30s and 2m.
	ReadTimeout, IdleTimeout time.Duration
	// ShutdownTimeout is how long Serve lets requests in flight finish once
	// its context is done. Default 10s.
	ShutdownTimeout time.Duration
	// Now returns the current time; tests set it. Default time.Now.
	Now func() time.Time
	// Keys re-encrypts stored private keys for POST /v1/keys/rotate.
	// Default nil: keys are not encrypted at rest, and that route answers
	// 409 saying so.
	Keys KeyRotator
	// Metrics, when set, is served on GET /metrics, and its inventory as
	// the status page on GET /. Default nil: neither route exists.
	Metrics *Metrics
	// DNS01Record returns the record the owner of d's name creates once
	// for DNS-01 through certserver's own zone ([dns01.zone]):
	// "_acme-challenge.NAME. CNAME LABEL.ZONE.", which GET
	// /v1/domains/{name} shows as dns01_cname; "" for a name whose orders
	// never go through the zone (it asks for another challenge). It must
	// not do I/O. Default nil: no zone, nothing shown.
	DNS01Record func(d *store.Domain) string
}

// Defaults of AdminConfig.
const (
	DefaultAdminListen             = "127.0.0.1:9400"
	DefaultAdminMaxBody            = 1 << 20
	DefaultAdminMaxDomainsBody     = 64 << 20
	DefaultAdminMaxImportBatchBody = 16 << 20
	DefaultAdminRequestTimeout     = 30 * time.Second
)

// withDefaults returns cfg with its zero fields set to their defaults, or an
// error naming the first field that is out of range.
func (cfg AdminConfig) withDefaults() (AdminConfig, error) {
	if cfg.Token == "" {
		return cfg, errors.New("no token configured: the admin API refuses to start without one")
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultAdminListen
	}
	if err := checkListen(cfg.Listen, cfg.AllowNonLoopback, "the admin token and private keys"); err != nil {
		return cfg, err
	}
	if cfg.MaxBody < 0 {
		return cfg, fmt.Errorf("MaxBody %d is negative", cfg.MaxBody)
	}
	if cfg.MaxBody == 0 {
		cfg.MaxBody = DefaultAdminMaxBody
	}
	if cfg.MaxDomainsBody < 0 {
		return cfg, fmt.Errorf("MaxDomainsBody %d is negative", cfg.MaxDomainsBody)
	}
	if cfg.MaxDomainsBody == 0 {
		cfg.MaxDomainsBody = DefaultAdminMaxDomainsBody
	}
	if cfg.MaxImportBatchBody < 0 {
		return cfg, fmt.Errorf("MaxImportBatchBody %d is negative", cfg.MaxImportBatchBody)
	}
	if cfg.MaxImportBatchBody == 0 {
		cfg.MaxImportBatchBody = DefaultAdminMaxImportBatchBody
	}
	if err := defaultDurations([]durationField{
		{"RequestTimeout", &cfg.RequestTimeout, DefaultAdminRequestTimeout},
		{"ReadTimeout", &cfg.ReadTimeout, 30 * time.Second},
		{"IdleTimeout", &cfg.IdleTimeout, defaultIdleTimeout},
		{"ShutdownTimeout", &cfg.ShutdownTimeout, 10 * time.Second},
	}); err != nil {
		return cfg, err
	}
	if cfg.StateCountTTL == 0 {
		cfg.StateCountTTL = DefaultStateCountTTL
	}
	if cfg.StateScanBudget <= 0 {
		cfg.StateScanBudget = stateScanBudget
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return cfg, nil
}

// AdminAPI is the HTTP server operators and the certserver CLI use, on a
// loopback TCP address. Every request but GET /healthz and GET /readyz
// needs the header
// "Authorization: Bearer TOKEN". Answers are JSON; errors are api.Error
// documents naming the problem.
//
//	GET    /healthz                   200 "ok" when the store answers, else 503
//	GET    /readyz                    200 "ready" when the store answers and the
//	                                  certificate endpoint serves (Ready), else 503
//	GET    /                          the status page, HTML (Metrics set; the token
//	                                  may also come as the HTTP Basic password)
//	GET    /metrics                   Prometheus metrics (Metrics set)
//	POST   /v1/certificates           import a certificate (api.ImportRequest)
//	POST   /v1/certificates/batch     import up to api.MaxImportBatch certificates,
//	                                  one api.ImportRequest per line, in one commit
//	                                  when it fits (api.ImportBatchResponse)
//	POST   /v1/domains                manage names (api.AddDomainsRequest, a JSON
//	                                  array of names, or one name per line)
//	GET    /v1/domains?after=&limit=&state=&expiring=&failing=&q=
//	                                  list managed names (api.DomainList)
//	GET    /v1/domains/{name}         one managed name (api.Domain)
//	POST   /v1/domains/{name}/renew   renew now (api.RenewResponse)
//	POST   /v1/domains/{name}/revoke  revoke its certificate, order a new one
//	                                  (api.RevokeRequest, api.Revocation)
//	DELETE /v1/domains/{name}         stop managing a name, ?revoke=REASON
//	                                  revokes its certificate first (api.Domain)
//	GET    /v1/queue                  what the renewer has to do (api.Queue)
//	GET    /v1/fleet                  this host's place in its fleet (api.Fleet;
//	                                  Fleet set)
//	POST   /v1/keys/rotate            re-encrypt one batch of stored private keys
//	                                  under the current key-encryption key
//	                                  (api.RotateKeysRequest, api.KeyRotation)
//
// Its methods are safe for concurrent use.
type AdminAPI struct {
	cfg       AdminConfig
	store     store.Store
	tokenHash [sha256.Size]byte
	routes    router
	server
	// importMu makes an import's check of the stored certificate and its
	// write one step with respect to other imports and to revocations.
	importMu sync.Mutex
	// states counts names by state for GET /v1/queue.
	states stateCounter
	// listScan is api.ListDomainsScan unless a test sets it.
	listScan int
	// limits holds the body limit of each request being read.
	limits bodyLimits
}

// NewAdminAPI returns an admin API over st, configured by cfg with its zero
// fields set to their defaults. It neither listens nor serves: call Listen,
// then Serve.
func NewAdminAPI(cfg AdminConfig, st store.Store, logger *slog.Logger) (*AdminAPI, error) {
	const name = "admin API"
	cfg, err := prepare(name, cfg, st, logger)
	if err != nil {
		return nil, err
	}
	a := &AdminAPI{
		cfg:       cfg,
		store:     st,
		tokenHash: sha256.Sum256([]byte(cfg.Token)),
		listScan:  api.ListDomainsScan,
		states:    stateCounter{budget: cfg.StateScanBudget, batch: stateScanBatch},
	}
	a.server.init(name, a.handle, logger.With("subsystem", "admin"), noBodyLimit, cfg.ReadTimeout, cfg.IdleTimeout, cfg.ShutdownTimeout)
	// A request refused before its body was read (handleReadError) has
	// its connection linger, so that the client reads the answer.
	a.server.lingering = true
	// Body limits are per route: the header decides before the body is read.
	a.server.srv.ErrorHandler = a.handleReadError
	a.server.srv.HeaderReceived = a.requestConfig
	a.routes.add(route{method: fasthttp.MethodGet, pattern: "/healthz", public: true, handle: a.healthz})
	a.routes.add(route{method: fasthttp.MethodGet, pattern: "/readyz", public: true, handle: a.readyz})
	a.routes.add(route{method: fasthttp.MethodPost, pattern: "/v1/certificates", handle: a.importCertificate})
	a.routes.add(route{method: fasthttp.MethodPost, pattern: "/v1/certificates/batch", ownLog: true, maxBody: cfg.MaxImportBatchBody, handle: a.importCertificates})
	a.routes.add(route{method: fasthttp.MethodPost, pattern: "/v1/domains", maxBody: cfg.MaxDomainsBody, handle: a.addDomains})
	a.routes.add(route{method: fasthttp.MethodGet, pattern: "/v1/domains", handle: a.listDomains})
	a.routes.add(route{method: fasthttp.MethodGet, pattern: "/v1/domains/{name}", handle: a.showDomain})
	a.routes.add(route{method: fasthttp.MethodDelete, pattern: "/v1/domains/{name}", handle: a.removeDomain})
	a.routes.add(route{method: fasthttp.MethodPost, pattern: "/v1/domains/{name}/renew", handle: a.renewDomain})
	if cfg.Metrics != nil {
		a.routes.add(route{method: fasthttp.MethodGet, pattern: "/metrics", quiet: true, handle: a.metrics})
		a.routes.add(route{method: fasthttp.MethodGet, pattern: "/", browser: true, handle: a.statusPage})
	}
	a.routes.add(route{method: fasthttp.MethodPost, pattern: "/v1/domains/{name}/revoke", maxBody: noBodyLimit, handle: a.revokeDomain})
	a.routes.add(route{method: fasthttp.MethodGet, pattern: "/v1/queue", handle: a.showQueue})
	if cfg.Fleet != nil {
		a.routes.add(route{method: fasthttp.MethodGet, pattern: "/v1/fleet", handle: a.showFleet})
	}
	a.routes.add(route{method: fasthttp.MethodPost, pattern: "/v1/keys/rotate", maxBody: noBodyLimit, handle: a.rotateKeys})
	return a, nil
}

// Listen binds the configured TCP address. ctx is accepted for symmetry
// with CertEndpoint.Listen and bounds nothing yet. On error nothing stays
// bound and the API cannot be used again.
func (a *AdminAPI) Listen(ctx context.Context) error {
	return a.server.listen(ctx, binding{TCP: a.cfg.Listen, AllowNonLoopback: a.cfg.AllowNonLoopback})
}

// handle authenticates, routes and answers one request, and logs it.
func (a *AdminAPI) handle(rc *fasthttp.RequestCtx) {
	start := time.Now()
	a.limits.take(&rc.Request.Header)
	defer recoverPanic(a.log, rc, func(rc *fasthttp.RequestCtx) {
		writeError(rc, errorf(fasthttp.StatusInternalServerError, "internal error"))
	})
	// The path as sent: fasthttp's rc.Path() is decoded with dot segments
	// resolved, which would let a route act on a name nobody sent.
	method, path := string(rc.Method()), string(rc.URI().PathOriginal())
	rt, p, allowed, perr := a.routes.match(method, path)

	level := slog.LevelInfo
	switch {
	case rt != nil && rt.browser && !a.authorizeBrowser(rc):
		// authorizeBrowser answered 401.
	case (rt == nil || !rt.public && !rt.browser) && !a.authorize(rc):
		// authorize answered 401.
	case perr != nil:
		writeError(rc, perr)
	case rt == nil && len(allowed) > 0:
		rc.Response.Header.Set("Allow", strings.Join(allowed, ", "))
		writeError(rc, errorf(fasthttp.StatusMethodNotAllowed, "method %s not allowed on %s; allowed: %s", method, path, strings.Join(allowed, ", ")))
	case rt == nil:
		writeError(rc, errorf(fasthttp.StatusNotFound, "no such endpoint: %s %s", method, path))
	default:
		if rt.public || rt.quiet {
			level = slog.LevelDebug
		}
		if limit := a.bodyLimit(rt); len(rc.PostBody()) > limit {
			// The server enforces the limit while reading; this covers a
			// request whose route was not recognized from its header alone.
			writeError(rc, bodyTooLarge(limit))
			break
		}
		ctx, cancel := context.WithTimeout(a.base, a.cfg.RequestTimeout)
		err := rt.handle(ctx, rc, p)
		cancel()
		if err != nil {
			a.fail(rc, rt, err)
		}
		if rt.ownLog && rc.Response.StatusCode() < 300 {
			level = slog.LevelDebug
		}
	}
	a.log.Log(context.Background(), level, "request",
		"method", method, "path", path, "status", rc.Response.StatusCode(),
		"remote_addr", rc.RemoteAddr().String(), "duration", time.Since(start).Round(time.Microsecond))
}

// fail answers the error a handler returned.
func (a *AdminAPI) fail(rc *fasthttp.RequestCtx, rt *route, err error) {
	var ae *api.Error
	if errors.As(err, &ae) {
		writeError(rc, ae)
		return
	}
	a.log.Error("request failed", "method", rt.method, "path", rt.pattern, "error", err)
	if ae := storeFailure(err); ae != nil {
		writeError(rc, ae)
		return
	}
	writeError(rc, errorf(fasthttp.StatusInternalServerError, "internal error (see the server log)"))
}

// authorize checks the bearer token (RFC 6750 section 2.1) and answers 401
// when it is missing or wrong. The comparison takes the same time whatever
// the token presented.
func (a *AdminAPI) authorize(rc *fasthttp.RequestCtx) bool {
	h := rc.Request.Header.Peek("Authorization")
	msg := ""
	scheme, token, ok := strings.Cut(string(h), " ")
	switch {
	case len(h) == 0:
		msg = "missing bearer token: send the header Authorization: Bearer TOKEN"
	case !ok || !strings.EqualFold(scheme, "Bearer"):
		msg = "the Authorization header must use the Bearer scheme"
	default:
		sum := sha256.Sum256([]byte(strings.TrimSpace(token)))
		if subtle.ConstantTimeCompare(sum[:], a.tokenHash[:]) == 1 {
			return true
		}
		msg = "invalid token"
	}
	a.log.Warn("unauthorized request", "method", string(rc.Method()), "path", string(rc.URI().PathOriginal()),
		"remote_addr", rc.RemoteAddr().String(), "problem", msg)
	rc.Response.Header.Set("WWW-Authenticate", `Bearer realm="certserver"`)
	writeError(rc, errorf(fasthttp.StatusUnauthorized, "%s", msg))
	return false
}

// bodyLimit is the largest body rt accepts.
func (a *AdminAPI) bodyLimit(rt *route) int {
	switch {
	case rt == nil:
		return noBodyLimit
	case rt.maxBody > 0:
		return rt.maxBody
	case rt.method == fasthttp.MethodPost || rt.method == fasthttp.MethodPut || rt.method == fasthttp.MethodPatch:
		return a.cfg.MaxBody
	}
	return noBodyLimit
}

// routeOf finds the route of a request from its header alone.
func (a *AdminAPI) routeOf(h *fasthttp.RequestHeader) *route {
	uri := string(h.RequestURI())
	if i := strings.IndexByte(uri, '?'); i >= 0 {
		uri = uri[:i]
	}
	// An absolute-form target (RFC 9112 section 3.2.2) carries the path
	// after the authority.
	if _, rest, ok := strings.Cut(uri, "://"); ok {
		uri = "/"
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			uri = rest[i:]
		}
	}
	rt, _, _, _ := a.routes.match(string(h.Method()), uri)
	return rt
}

// requestConfig gives each request the body limit of its route, before
// the body is read, and remembers it for handleReadError.
func (a *AdminAPI) requestConfig(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
	limit := a.bodyLimit(a.routeOf(h))
	a.limits.set(h, limit)
	return fasthttp.RequestConfig{MaxRequestBodySize: limit}
}

// handleReadError answers a request that could not be read.
func (a *AdminAPI) handleReadError(rc *fasthttp.RequestCtx, err error) {
	// fasthttp closes the connection after this answer, with what is
	// left of the request unread: the client must still get to read it.
	lingerOnClose(rc)
	var ne net.Error
	limit, known := a.limits.take(&rc.Request.Header)
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		if !known {
			limit = a.bodyLimit(a.routeOf(&rc.Request.Header))
		}
		writeError(rc, bodyTooLarge(limit))
	case errors.As(err, &ne) && ne.Timeout():
		writeError(rc, errorf(fasthttp.StatusRequestTimeout, "timed out reading the request"))
	default:
		writeError(rc, errorf(fasthttp.StatusBadRequest, "malformed HTTP request"))
	}
}

// bodyLimits remembers the body limit requestConfig chose for a request
// until it is answered, keyed by the request's header (one per connection,
// reused for each of its requests). handleReadError needs it because
// fasthttp resets the request, header and all, when reading a chunked body
// fails, so that the route can no longer be found from it. Its methods are
// safe for concurrent use.
type bodyLimits struct {
	mu sync.Mutex
	m  map[*fasthttp.RequestHeader]int
}

// maxBodyLimits bounds how many limits bodyLimits holds. A request whose
// connection closes while its body is read leaves its entry behind until
// the connection's next request or this bound clears them all; a cleared
// entry only costs the limit in the message of a chunked body's 413.
const maxBodyLimits = 1 << 14

// set remembers limit for the request of h.
func (l *bodyLimits) set(h *fasthttp.RequestHeader, limit int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil || len(l.m) >= maxBodyLimits {
		l.m = make(map[*fasthttp.RequestHeader]int)
	}
	l.m[h] = limit
}

// take returns and forgets the limit remembered for the request of h.
func (l *bodyLimits) take(h *fasthttp.RequestHeader) (int, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	limit, ok := l.m[h]
	delete(l.m, h)
	return limit, ok
}

// bodyTooLarge is the 413 answer for a body over limit bytes.
func bodyTooLarge(limit int) *api.Error {
	return errorf(fasthttp.StatusRequestEntityTooLarge, "request body is larger than the limit of %s bytes", strconv.Itoa(limit))
}

// Pinger is implemented by stores that can check their health cheaply.
// GET /healthz uses it when the store has it, else a one-record listing.
type Pinger interface {
	Ping(ctx context.Context) error
}

// healthz answers 200 "ok" when the store answers, else 503: the process
// is alive (liveness).
func (a *AdminAPI) healthz(ctx context.Context, rc *fasthttp.RequestCtx, _ params) error {
	if err := a.pingStore(ctx); err != nil {
		a.log.Error("health check: store failed", "error", err)
		plain(rc, fasthttp.StatusServiceUnavailable, "store unavailable\n")
		return nil
	}
	plain(rc, fasthttp.StatusOK, "ok\n")
	return nil
}

// readyz answers 200 "ready" when the store answers and Ready (if set)
// says the sidecar can serve nginx, else 503 with the reason: the sidecar
// may take traffic (readiness), for a load balancer or a rollout script.
//
// On a fleet host (Fleet set) the host is ready once its local copy has
// caught up since the start, and a second line says whether the fleet's
// database is up ("database: up", or "database: down since TIME: CAUSE")
// and a third the local copy's lag: a host serves from its copy while the
// database is down, and stays ready.
func (a *AdminAPI) readyz(ctx context.Context, rc *fasthttp.RequestCtx, _ params) error {
	err := a.pingStore(ctx)
	if err == nil && a.cfg.Ready != nil {
		err = a.cfg.Ready(ctx)
	}
	var fleet string
	if a.cfg.Fleet != nil {
		var notReady error
		fleet, notReady = fleetReadiness(a.cfg.Fleet.FleetStatus())
		fleet += "\n"
		if err == nil {
			err = notReady
		}
	}
	if err != nil {
		a.log.Warn("readiness check failed", "error", err)
		plain(rc, fasthttp.StatusServiceUnavailable, "not ready: "+err.Error()+"\n"+fleet)
		return nil
	}
	plain(rc, fasthttp.StatusOK, "ready\n"+fleet)
	return nil
}

// pingStore checks that the store health checks look at answers:
// HealthStore when set, else the admin API's own.
func (a *AdminAPI) pingStore(ctx context.Context) error {
	st := a.store
	if a.cfg.HealthStore != nil {
		st = a.cfg.HealthStore
	}
	if p, ok := st.(Pinger); ok {
		return p.Ping(ctx)
	}
	_, err := st.ListCertificates(ctx, "", 1)
	return err
}

// plain writes a short uncacheable text answer.
func plain(rc *fasthttp.RequestCtx, status int, body string) {
	rc.SetContentType("text/plain; charset=utf-8")
	rc.Response.Header.Set("Cache-Control", "no-store")
	rc.SetStatusCode(status)
	rc.SetBodyString(body)
}
