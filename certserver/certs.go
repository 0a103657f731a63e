package certserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/hostname"
	"github.com/certserver/certserver/store/sealed"
	"github.com/valyala/fasthttp"
)

// CertPathPrefix is the path under which the certificate endpoint serves
// certificates: GET /v1/certs/{sni}.
const CertPathPrefix = "/v1/certs/"

// CertEndpointConfig configures a CertEndpoint. The zero value of every
// field but Socket and Listen means its default; at least one of Socket and
// Listen must be set.
type CertEndpointConfig struct {
	// Socket is the path of the unix socket to serve on; "" for none. A
	// stale socket file is replaced; a socket a live server answers on is
	// an error. The file is removed when the endpoint stops.
	Socket string
	// SocketMode is the permission bits of the socket file. Default 0660:
	// whoever may connect may read every private key, so keep it to the
	// server's user and SocketGroup.
	SocketMode fs.FileMode
	// SocketGroup is the group (name or numeric ID) the socket file is given
	// to, typically the group nginx's workers run as. Default "": the
	// process's group.
	SocketGroup string
	// Listen is a TCP address "host:port" to serve on; "" for none. It must
	// be a loopback address (127.0.0.0/8, [::1], localhost) unless
	// AllowNonLoopback is set.
	Listen string
	// AllowNonLoopback permits a Listen address other hosts can reach.
	// Default false: private keys travel over this endpoint in clear text.
	AllowNonLoopback bool
	// MaxAge caps the Cache-Control max-age of a certificate. Default 10m.
	MaxAge time.Duration
	// MinAge is the max-age of a certificate that is due for renewal or
	// expired, and the floor for all others. Default 10s.
	MinAge time.Duration
	// NotFoundMaxAge is the Cache-Control max-age of a 404 answer (no
	// certificate for the name yet). Default 10s.
	NotFoundMaxAge time.Duration
	// LookupTimeout bounds one store lookup. Default 300ms: below the
	// Lua module's read_timeout_ms (500), so that a slow store answers 500
	// (nginx serves its cached copy and asks again after error_ttl) rather
	// than leaving nginx to time out.
	LookupTimeout time.Duration
	// ReadTimeout bounds reading one request, IdleTimeout how long a
	// keep-alive connection may wait for the next one. Defaults 10s and 2m.
	ReadTimeout, IdleTimeout time.Duration
	// ShutdownTimeout is how long Serve lets requests in flight finish once
	// its context is done. Default 5s.
	ShutdownTimeout time.Duration
	// OnDemand, when set, is told about every valid host name the endpoint
	// answers 404 for that a CA could issue for (hostname.CheckOrderable),
	// so that a certificate can be obtained on demand.
	// Default nil: on-demand issuance is off.
	OnDemand OnDemand
	// Metrics, when set, counts the endpoint's answers by status and
	// times them (certserver_cert_requests_total,
	// certserver_cert_request_duration_seconds). Default nil: not counted.
	Metrics *Metrics
	// Now returns the current time; tests set it. Default time.Now.
	Now func() time.Time
}

// OnDemand receives the names the certificate endpoint has no certificate
// for. renewer.OnDemand implements it.
type OnDemand interface {
	// Request asks for a certificate for name, a normalized host name (never
	// a wildcard) that passes hostname.CheckOrderable and that no stored
	// certificate serves. It is called from the
	// request handler, on every such miss, so it must return at once: no
	// I/O and no waiting, only queueing. Deciding whether the name may have
	// a certificate is the implementation's business. It must be safe for
	// concurrent use.
	Request(name string)
}

// Defaults of CertEndpointConfig.
const (
	DefaultSocketMode        fs.FileMode = 0o660
	DefaultCertMaxAge                    = 10 * time.Minute
	DefaultCertMinAge                    = 10 * time.Second
	DefaultNotFoundMaxAge                = 10 * time.Second
	DefaultLookupTimeout                 = 5 * time.Second
	DefaultCertLookupTimeout             = 300 * time.Millisecond
	defaultReadTimeout                   = 10 * time.Second
	defaultIdleTimeout                   = 2 * time.Minute
	defaultShutdownTimeout               = 5 * time.Second
)

// withDefaults returns cfg with its zero fields set to their defaults, or
// an error naming the first field that is out of range.
func (cfg CertEndpointConfig) withDefaults() (CertEndpointConfig, error) {
	if cfg.Socket == "" && cfg.Listen == "" {
		return cfg, errors.New("neither Socket nor Listen is set: the endpoint needs somewhere to listen")
	}
	if cfg.SocketMode == 0 {
		cfg.SocketMode = DefaultSocketMode
	}
	if cfg.SocketMode&^fs.ModePerm != 0 {
		return cfg, fmt.Errorf("SocketMode %v: only permission bits are allowed", cfg.SocketMode)
	}
	if cfg.Listen != "" {
		if err := checkListen(cfg.Listen, cfg.AllowNonLoopback, "private keys"); err != nil {
			return cfg, err
		}
	}
	if err := defaultDurations([]durationField{
		{"MaxAge", &cfg.MaxAge, DefaultCertMaxAge},
		{"MinAge", &cfg.MinAge, DefaultCertMinAge},
		{"NotFoundMaxAge", &cfg.NotFoundMaxAge, DefaultNotFoundMaxAge},
		{"LookupTimeout", &cfg.LookupTimeout, DefaultCertLookupTimeout},
		{"ReadTimeout", &cfg.ReadTimeout, defaultReadTimeout},
		{"IdleTimeout", &cfg.IdleTimeout, defaultIdleTimeout},
		{"ShutdownTimeout", &cfg.ShutdownTimeout, defaultShutdownTimeout},
	}); err != nil {
		return cfg, err
	}
	if cfg.MinAge > cfg.MaxAge {
		return cfg, fmt.Errorf("MinAge %v is longer than MaxAge %v", cfg.MinAge, cfg.MaxAge)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return cfg, nil
}

// CertEndpoint is the HTTP server nginx asks for certificates, on a unix
// socket and/or a loopback TCP address:
//
//	GET /v1/certs/{sni}
//
// answers 200 with the PEM chain followed by the PEM private key
// (Content-Type application/x-pem-file), a Cache-Control max-age from
// CacheMaxAge and the ID of the stored record that serves the name in
// X-Certserver-Record (so that a cache holds one copy for all the names of
// a record, a wildcard's subnames included), and in X-Certserver-Match the
// stored name that matched: the name itself, or the wildcard pattern one
// label up that serves it; 404 when no certificate serves the name (yet); 400 when the
// name is not a valid host name (an IP literal, a wildcard, garbage); 405
// for a method other than GET and HEAD; 404 for any other path; 500 when
// the store fails, or when the record's private key cannot be decrypted
// (sealed.ErrOpen: logged and counted, and never served with another key).
//
// An expired certificate is still served, with max-age MinAge: nginx's
// alternative is its fallback certificate, which no client accepts either,
// while an expired certificate for the right name fails with an accurate
// error, keeps working for clients that tolerate it, and is replaced within
// MinAge of its renewal being stored.
//
// A request with "Accept: application/vnd.certserver.leaf+pem" gets the
// second format instead (LeafFormat): the leaf and key PEM, with the
// digests of the intermediates, which GET /v1/chains/{digest} serves
// (ChainPathPrefix), and of the key. Without it, the first format.
//
// On a 404 for a valid host name a CA could issue for
// (hostname.CheckOrderable) the endpoint calls OnDemand.Request, when
// configured, and answers without waiting: the handshake gets nginx's
// fallback certificate until the certificate is stored.
//
// The endpoint only reads the store; it never waits on ACME. Its methods
// are safe for concurrent use.
type CertEndpoint struct {
	cfg   CertEndpointConfig
	store store.Store
	// marksStore is the store the change feed's marks look names up
	// in: store, or the store under it when store is the sealing of its
	// keys (sealed.Store). The marks ask only whether a record serves
	// the name, and a key opened for them would be thrown away. Only
	// that layer is left out: any other wrapper of the endpoint's store
	// may change what a lookup answers, and the marks must answer as the
	// endpoint does.
	marksStore store.Store
	chains     intermediates
	marks      goneMemo // the change feed's marks (changes.go)
	server
}

// NewCertEndpoint returns a certificate endpoint reading st, configured by
// cfg with its zero fields set to their defaults. It neither listens nor
// serves: call Listen, then Serve.
func NewCertEndpoint(cfg CertEndpointConfig, st store.Store, logger *slog.Logger) (*CertEndpoint, error) {
	const name = "certificate endpoint"
	cfg, err := prepare(name, cfg, st, logger)
	if err != nil {
		return nil, err
	}
	e := &CertEndpoint{cfg: cfg, store: st, marksStore: st, marks: goneMemo{turn: make(chan struct{}, 1)}}
	if s, ok := st.(*sealed.Store); ok {
		e.marksStore = s.Unwrap()
	}
	e.server.init(name, e.handle, logger.With("subsystem", "certs"), 4<<10, cfg.ReadTimeout, cfg.IdleTimeout, cfg.ShutdownTimeout)
	return e, nil
}

// Listen binds the configured unix socket and TCP address. ctx bounds the
// binding only (the check for a live server on an existing socket file),
// not the life of the listeners. On error nothing stays bound and the
// endpoint cannot be used again.
func (e *CertEndpoint) Listen(ctx context.Context) error {
	return e.server.listen(ctx, binding{Socket: e.cfg.Socket, SocketMode: e.cfg.SocketMode, SocketGroup: e.cfg.SocketGroup,
		TCP: e.cfg.Listen, AllowNonLoopback: e.cfg.AllowNonLoopback})
}

// handle answers one request. Nothing from rc is kept after it returns.
func (e *CertEndpoint) handle(rc *fasthttp.RequestCtx) {
	if string(rc.Path()) == ChangesPath {
		// Polled by every nginx worker each second: not counted with the
		// certificate requests.
		defer recoverPanic(e.log, rc, internalError)
		e.handleChanges(rc)
		return
	}
	if bytes.HasPrefix(rc.Path(), []byte(ChainPathPrefix)) {
		// Asked once per intermediate per nginx: not counted either.
		defer recoverPanic(e.log, rc, internalError)
		e.handleChain(rc)
		return
	}
	if m := e.cfg.Metrics; m != nil {
		// Deferred first, so that it sees the 500 of a panic.
		start := time.Now()
		defer func() { m.observeCert(rc.Response.StatusCode(), time.Since(start)) }()
	}
	defer recoverPanic(e.log, rc, internalError)
	raw, ok := pathParam(rc, CertPathPrefix)
	if !ok {
		return
	}
	name, err := hostname.Normalize(raw)
	if err != nil {
		// The answer for this name will not change.
		rc.Error(err.Error()+"\n", fasthttp.StatusBadRequest)
		setMaxAge(rc, e.cfg.MaxAge)
		return
	}
	// No timer unless the store waits on the context (lookupContext).
	ctx, release := withLookupDeadline(e.base, e.cfg.LookupTimeout)
	c, found, err := lookup(ctx, e.store, name)
	release()
	if !found && err == nil {
		rc.Error("no certificate for "+name+"\n", fasthttp.StatusNotFound)
		setMaxAge(rc, e.cfg.NotFoundMaxAge)
		if e.log.Enabled(e.base, slog.LevelDebug) {
			e.log.Debug("no certificate", "name", name, "on_demand", e.cfg.OnDemand != nil)
		}
		// Only a name a CA would issue for is worth ordering.
		if e.cfg.OnDemand != nil && hostname.CheckOrderable(name) == nil {
			e.cfg.OnDemand.Request(name)
		}
		return
	}
	if errors.Is(err, sealed.ErrOpen) {
		// The record is there but its key is not readable here: never
		// serve it, with any other key either. The error names the record
		// and the key ID, never key material.
		e.log.Error("certificate key cannot be decrypted", "name", name, "error", err)
		if m := e.cfg.Metrics; m != nil {
			m.observeKeyError()
		}
		internalError(rc)
		return
	}
	if err != nil {
		e.log.Error("certificate lookup failed", "name", name, "error", err)
		internalError(rc)
		return
	}
	now := e.cfg.Now()
	maxAge := CacheMaxAge(c, now, e.cfg.MinAge, e.cfg.MaxAge)
	rc.SetStatusCode(fasthttp.StatusOK)
	setMaxAge(rc, maxAge)
	rc.Response.Header.Set(RecordHeader, c.ID)
	rc.Response.Header.Set(MatchHeader, matched(c, name))
	if !wantsLeafFormat(rc) || !e.writeLeafFormat(rc, c) {
		rc.SetContentType("application/x-pem-file")
		writeLine(rc, c.ChainPEM)
		writeLine(rc, c.KeyPEM)
	}
	if e.log.Enabled(e.base, slog.LevelDebug) {
		e.log.Debug("certificate served", "name", name, "id", c.ID, "serial", c.Serial,
			"not_after", c.NotAfter, "max_age", maxAge, "expired", !now.Before(c.NotAfter))
	}
}

// lookup looks name up in st for GET /v1/certs/NAME (st the endpoint's
// store) and the change feed's marks (its marksStore): found is false,
// with no error, when the endpoint answers 404 (neither the name nor its
// wildcard one label up is stored); an error is any other failure (an
// unreadable record or key is not a 404).
func lookup(ctx context.Context, st store.Store, name string) (c *store.Certificate, found bool, err error) {
	c, err = st.LookupCertificate(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, false, nil
	}
	return c, err == nil, err
}

// matched returns the stored name by which LookupCertificate found c for
// name: name itself when c lists it (its own link is read first), else
// the wildcard pattern one label up.
func matched(c *store.Certificate, name string) string {
	if slices.Contains(c.Names, name) {
		return name
	}
	if wild, ok := hostname.WildcardFor(name); ok {
		return wild
	}
	return name
}

// writeLine appends b to the response body, followed by a newline unless it
// ends with one.
func writeLine(rc *fasthttp.RequestCtx, b []byte) {
	rc.Write(b)
	if len(b) == 0 || b[len(b)-1] != '\n' {
		rc.WriteString("\n")
	}
}

// setMaxAge sets "Cache-Control: max-age=N" with N the whole seconds of d.
func setMaxAge(rc *fasthttp.RequestCtx, d time.Duration) {
	var buf [32]byte
	v := append(buf[:0], "max-age="...)
	v = strconv.AppendInt(v, int64(d/time.Second), 10)
	rc.Response.Header.SetBytesV("Cache-Control", v)
}

// internalError answers 500 with a body that reveals nothing; the caller
// logs the cause.
func internalError(rc *fasthttp.RequestCtx) {
	rc.Error("internal error\n", fasthttp.StatusInternalServerError)
	rc.Response.Header.Set("Cache-Control", "no-store")
}
