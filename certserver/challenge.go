package certserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/valyala/fasthttp"
)

// ChallengePathPrefix is the path under which the challenge endpoint serves
// HTTP-01 key authorizations (RFC 8555 section 8.3):
// GET /.well-known/acme-challenge/{token}.
const ChallengePathPrefix = "/.well-known/acme-challenge/"

// DefaultChallengeListen is the default address of the challenge endpoint,
// the upstream nginx's certserver-acme.conf snippet proxies to.
const DefaultChallengeListen = "127.0.0.1:9402"

// maxChallengeToken is the longest token the endpoint looks up. Let's
// Encrypt and Pebble send 43 characters; the renewer stores none longer.
const maxChallengeToken = 256

// ChallengeConfig configures a ChallengeEndpoint. The zero value of every
// field means its default.
type ChallengeConfig struct {
	// Listen is the TCP address "host:port" to serve on. Default
	// DefaultChallengeListen ("127.0.0.1:9402"). It must be a loopback
	// address unless AllowNonLoopback is set: nginx on the same host
	// proxies the CA's requests to it.
	Listen string
	// AllowNonLoopback permits a Listen address other hosts can reach.
	// Default false.
	AllowNonLoopback bool
	// LookupTimeout bounds one store lookup (on a fleet host, the copy
	// and then the database). Default 5s: a CA waits longer for the
	// answer (Pebble 15 s), and a slow answer passes where a "not found"
	// fails the order.
	LookupTimeout time.Duration
	// ReadTimeout bounds reading one request, IdleTimeout how long a
	// keep-alive connection may wait for the next one. Defaults 10s and 2m.
	ReadTimeout, IdleTimeout time.Duration
	// ShutdownTimeout is how long Serve lets requests in flight finish once
	// its context is done. Default 5s.
	ShutdownTimeout time.Duration
}

// withDefaults returns cfg with its zero fields set to their defaults, or
// an error naming the first field that is out of range.
func (cfg ChallengeConfig) withDefaults() (ChallengeConfig, error) {
	if cfg.Listen == "" {
		cfg.Listen = DefaultChallengeListen
	}
	if err := CheckLoopback(cfg.Listen); err != nil {
		if !errors.Is(err, ErrNotLoopback) {
			return cfg, err
		}
		if !cfg.AllowNonLoopback {
			return cfg, fmt.Errorf("%w; nginx on this host proxies the CA's requests to this endpoint: "+
				"use a loopback address (127.0.0.1, [::1], localhost), or set allow_non_loopback = true "+
				"if nginx runs elsewhere on a network that is yours", err)
		}
	}
	if err := defaultDurations([]durationField{
		{"LookupTimeout", &cfg.LookupTimeout, DefaultLookupTimeout},
		{"ReadTimeout", &cfg.ReadTimeout, defaultReadTimeout},
		{"IdleTimeout", &cfg.IdleTimeout, defaultIdleTimeout},
		{"ShutdownTimeout", &cfg.ShutdownTimeout, defaultShutdownTimeout},
	}); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// ChallengeEndpoint answers the CA's HTTP-01 validation requests, which
// nginx's port 80 proxies to it:
//
//	GET /.well-known/acme-challenge/{token}
//
// answers 200 with the key authorization the renewer stored for token
// (text/plain); 404 when no such token is stored (or it expired); 400 for
// a token that is not 1 to 256 base64url characters ([A-Za-z0-9_-]); 405
// for a method other than GET and HEAD; 404 for any other path; 500 when
// the store fails. It needs no authentication: a key authorization is
// meant to be read by the CA, and is worthless without the account key.
//
// The endpoint only reads the store. Its methods are safe for concurrent
// use.
type ChallengeEndpoint struct {
	cfg   ChallengeConfig
	store store.Store
	server
}

// NewChallengeEndpoint returns a challenge endpoint reading st, configured
// by cfg with its zero fields set to their defaults. It neither listens nor
// serves: call Listen, then Serve.
func NewChallengeEndpoint(cfg ChallengeConfig, st store.Store, logger *slog.Logger) (*ChallengeEndpoint, error) {
	const name = "challenge endpoint"
	cfg, err := prepare(name, cfg, st, logger)
	if err != nil {
		return nil, err
	}
	c := &ChallengeEndpoint{cfg: cfg, store: st}
	c.server.init(name, c.handle, logger.With("subsystem", "challenge"), 4<<10, cfg.ReadTimeout, cfg.IdleTimeout, cfg.ShutdownTimeout)
	return c, nil
}

// Listen binds the configured TCP address. ctx is accepted for symmetry
// with CertEndpoint.Listen and bounds nothing yet. On error nothing stays
// bound and the endpoint cannot be used again.
func (c *ChallengeEndpoint) Listen(ctx context.Context) error {
	return c.server.listen(ctx, binding{TCP: c.cfg.Listen, AllowNonLoopback: c.cfg.AllowNonLoopback})
}

// handle answers one request. Nothing from rc is kept after it returns. The
// token is never logged: with the account's thumbprint it is the key
// authorization.
func (c *ChallengeEndpoint) handle(rc *fasthttp.RequestCtx) {
	defer recoverPanic(c.log, rc, internalError)
	// Set last: rc.Error resets the headers.
	defer rc.Response.Header.Set("Cache-Control", "no-store")
	raw, ok := pathParam(rc, ChallengePathPrefix)
	if !ok {
		return
	}
	if !validToken(raw) {
		rc.Error("invalid token: want 1 to 256 base64url characters\n", fasthttp.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(c.base, c.cfg.LookupTimeout)
	keyAuth, err := c.store.GetChallenge(ctx, raw)
	cancel()
	switch {
	case errors.Is(err, store.ErrNotFound):
		rc.Error("no such challenge\n", fasthttp.StatusNotFound)
		c.debug("challenge not found", rc)
	case err != nil:
		c.log.Error("challenge lookup failed", "host", string(rc.Host()), "error", err)
		internalError(rc)
	default:
		rc.SetStatusCode(fasthttp.StatusOK)
		rc.SetContentType("text/plain")
		rc.SetBodyString(keyAuth)
		c.debug("challenge answered", rc)
	}
}

// debug logs the outcome of a lookup: the host the CA validates and who
// asked (nginx, for the CA), never the token.
func (c *ChallengeEndpoint) debug(msg string, rc *fasthttp.RequestCtx) {
	if c.log.Enabled(c.base, slog.LevelDebug) {
		c.log.Debug(msg, "host", string(rc.Host()), "remote_addr", rc.RemoteAddr().String())
	}
}

// validToken reports whether t is 1 to maxChallengeToken base64url
// characters without padding (RFC 8555 section 8.3, RFC 4648 section 5).
func validToken(t string) bool {
	if len(t) == 0 || len(t) > maxChallengeToken {
		return false
	}
	for i := 0; i < len(t); i++ {
		b := t[i]
		if 'A' <= b && b <= 'Z' || 'a' <= b && b <= 'z' || '0' <= b && b <= '9' || b == '-' || b == '_' {
			continue
		}
		return false
	}
	return true
}
