package certserver

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/hostname"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultTLSALPNListen is the default address of the TLS-ALPN-01
// responder, where nginx's certserver-stream.conf snippet sends the
// connections that offer acme-tls/1.
const DefaultTLSALPNListen = "127.0.0.1:9403"

// ACMETLS1 is the ALPN protocol of TLS-ALPN-01 validation (RFC 8737
// section 6.2).
const ACMETLS1 = "acme-tls/1"

// idPeAcmeIdentifier is the OID of the acmeIdentifier certificate
// extension (RFC 8737 sections 3 and 6.1).
var idPeAcmeIdentifier = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 31}

// Defaults of TLSALPNConfig.
const (
	defaultTLSALPNHandshakeTimeout = 10 * time.Second
	defaultTLSALPNMaxConns         = 256
)

// TLSALPNConfig configures a TLSALPNResponder. The zero value of every
// field means its default.
type TLSALPNConfig struct {
	// Listen is the TCP address "host:port" to serve on. Default
	// DefaultTLSALPNListen ("127.0.0.1:9403"). It must be a loopback
	// address unless AllowNonLoopback is set: nginx's stream server on
	// the same host passes the CA's connections to it.
	Listen string
	// AllowNonLoopback permits a Listen address other hosts can reach.
	// Default false.
	AllowNonLoopback bool
	// LookupTimeout bounds one store lookup (on a fleet host, the copy
	// and then the database). Default 5s: a CA waits longer for the
	// answer (Pebble 15 s), and a slow answer passes where a "not found"
	// fails the order.
	LookupTimeout time.Duration
	// HandshakeTimeout bounds one connection, from accepting it to the
	// end of its handshake, PROXY header included. Default 10s.
	HandshakeTimeout time.Duration
	// MaxConns is the most connections handled at once; those over it
	// are closed at once (a validation is a handful of connections).
	// Default 256.
	MaxConns int
	// Registerer, when set, receives the responder's metric,
	// certserver_tls_alpn_connections_total{result}. Default nil: none.
	Registerer prometheus.Registerer
}

func (cfg TLSALPNConfig) withDefaults() (TLSALPNConfig, error) {
	if cfg.Listen == "" {
		cfg.Listen = DefaultTLSALPNListen
	}
	if err := CheckLoopback(cfg.Listen); err != nil {
		if !errors.Is(err, ErrNotLoopback) {
			return cfg, err
		}
		if !cfg.AllowNonLoopback {
			return cfg, fmt.Errorf("%w; nginx's stream server on this host passes the CA's connections to this responder: "+
				"use a loopback address (127.0.0.1, [::1], localhost), or set allow_non_loopback = true "+
				"if nginx runs elsewhere on a network that is yours", err)
		}
	}
	if cfg.MaxConns < 0 {
		return cfg, fmt.Errorf("MaxConns %d is negative", cfg.MaxConns)
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = defaultTLSALPNMaxConns
	}
	return cfg, defaultDurations([]durationField{
		{"LookupTimeout", &cfg.LookupTimeout, DefaultLookupTimeout},
		{"HandshakeTimeout", &cfg.HandshakeTimeout, defaultTLSALPNHandshakeTimeout},
	})
}

// The results a connection to the responder ends with, the values of the
// result label of certserver_tls_alpn_connections_total.
const (
	alpnAnswered   = "answered"     // the challenge certificate was served
	alpnNoACME     = "no_acme_tls"  // the ClientHello did not offer only acme-tls/1
	alpnUnknown    = "unknown_name" // no challenge for the SNI name (or none, or not a host name)
	alpnBadProxy   = "bad_proxy_header"
	alpnStoreError = "store_error"
	alpnFailed     = "handshake_failed" // the peer went away or spoke something else
	alpnOverLimit  = "over_limit"       // MaxConns connections already open
)

var alpnResults = []string{alpnAnswered, alpnNoACME, alpnUnknown, alpnBadProxy, alpnStoreError, alpnFailed, alpnOverLimit}

// TLSALPNResponder answers the CA's TLS-ALPN-01 validations (RFC 8737),
// which nginx's stream server (certserver-stream.conf) passes to it: the
// connections whose ClientHello offers exactly acme-tls/1, each preceded
// by a PROXY protocol header (version 1 or 2; a connection without one is
// refused).
//
// For a ClientHello offering only acme-tls/1 with server name X, it
// serves a self-signed certificate for X carrying, in the critical
// acmeIdentifier extension, the SHA-256 digest of the key authorization
// the renewer stored under store.TLSALPN01Token(X), negotiates acme-tls/1,
// and closes the connection after the handshake (RFC 8737 section 3).
// Every other connection is refused with a TLS alert:
// no_application_protocol when acme-tls/1 is not offered at all,
// unrecognized_name when no challenge is stored for X, when X is missing
// or not a host name, or when other protocols are offered beside
// acme-tls/1; internal_error when the store fails. Each result is counted
// in certserver_tls_alpn_connections_total{result}.
//
// The responder only reads the store. Its methods are safe for concurrent
// use.
type TLSALPNResponder struct {
	cfg     TLSALPNConfig
	store   store.Store
	log     *slog.Logger
	results map[string]prometheus.Counter
	slots   chan struct{}

	mu      sync.Mutex
	ln      net.Listener
	serving bool
}

// NewTLSALPNResponder returns a responder reading st, configured by cfg
// with its zero fields set to their defaults, its metric registered. It
// neither listens nor serves: call Listen, then Serve.
func NewTLSALPNResponder(cfg TLSALPNConfig, st store.Store, logger *slog.Logger) (*TLSALPNResponder, error) {
	const name = "tls-alpn-01 responder"
	cfg, err := prepare(name, cfg, st, logger)
	if err != nil {
		return nil, err
	}
	r := &TLSALPNResponder{
		cfg:     cfg,
		store:   st,
		log:     logger.With("subsystem", "tls_alpn"),
		results: make(map[string]prometheus.Counter, len(alpnResults)),
		slots:   make(chan struct{}, cfg.MaxConns),
	}
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "certserver_tls_alpn_connections_total",
		Help: "Connections to the TLS-ALPN-01 responder by result: answered (challenge certificate served), no_acme_tls (acme-tls/1 not offered alone), unknown_name (no challenge for the SNI name), bad_proxy_header, store_error, handshake_failed, over_limit.",
	}, []string{"result"})
	for _, res := range alpnResults {
		r.results[res] = vec.WithLabelValues(res)
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(vec); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	return r, nil
}

// Listen binds the configured TCP address. Unless AllowNonLoopback is
// set, the address actually bound must be a loopback one. ctx bounds
// nothing yet.
func (r *TLSALPNResponder) Listen(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", r.cfg.Listen)
	if err != nil {
		return fmt.Errorf("tls-alpn-01 responder: %w", err)
	}
	if ta, ok := ln.Addr().(*net.TCPAddr); ok && !r.cfg.AllowNonLoopback && !ta.IP.IsLoopback() {
		ln.Close()
		return fmt.Errorf("tls-alpn-01 responder: address %q resolved to %s: %w", r.cfg.Listen, ta.IP, ErrNotLoopback)
	}
	r.mu.Lock()
	r.ln = ln
	r.mu.Unlock()
	return nil
}

// Addr returns the address Listen bound, nil before.
func (r *TLSALPNResponder) Addr() net.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ln == nil {
		return nil
	}
	return r.ln.Addr()
}

// Close releases what Listen bound without serving. Serve does it itself
// when it returns.
func (r *TLSALPNResponder) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ln == nil {
		return nil
	}
	return r.ln.Close()
}

// Serve answers connections until ctx is done, then closes the listener
// and waits for the connections under way (each ends within
// HandshakeTimeout). It returns nil after such a stop, or the error that
// stopped the listener. A responder serves once.
func (r *TLSALPNResponder) Serve(ctx context.Context) error {
	r.mu.Lock()
	ln, serving := r.ln, r.serving
	r.serving = true
	r.mu.Unlock()
	switch {
	case ln == nil:
		return errors.New("tls-alpn-01 responder: Serve before Listen")
	case serving:
		return errors.New("tls-alpn-01 responder: Serve called twice")
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			ln.Close()
			return fmt.Errorf("tls-alpn-01 responder: %w", err)
		}
		select {
		case r.slots <- struct{}{}:
		default:
			conn.Close()
			r.count(alpnOverLimit)
			continue
		}
		wg.Go(func() {
			defer func() { <-r.slots }()
			r.handle(ctx, conn)
		})
	}
}

// handle serves one connection and counts its result.
func (r *TLSALPNResponder) handle(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	defer func() {
		if p := recover(); p != nil {
			r.log.Error("panic while answering a tls-alpn-01 connection", "panic", p)
		}
	}()
	_ = conn.SetDeadline(time.Now().Add(r.cfg.HandshakeTimeout))
	br := bufio.NewReaderSize(conn, 512)
	hdr, err := readProxyHeader(br)
	if err != nil {
		r.count(alpnBadProxy)
		r.log.Warn("tls-alpn-01 connection refused: no valid PROXY protocol header", "remote_addr", conn.RemoteAddr().String(), "error", err)
		return
	}
	client := conn.RemoteAddr().String()
	if hdr.Src.IsValid() {
		client = hdr.Src.String()
	}
	var result, sni string
	cfg := &tls.Config{
		MinVersion:             tls.VersionTLS12,
		NextProtos:             []string{ACMETLS1},
		SessionTicketsDisabled: true,
		// Called before the protocols are negotiated: a ClientHello
		// offering protocols but not acme-tls/1 is then refused by
		// crypto/tls with no_application_protocol, and GetCertificate is
		// not called.
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			sni = hello.ServerName
			if !slices.Contains(hello.SupportedProtos, ACMETLS1) {
				result = alpnNoACME
			}
			return nil, nil
		},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			cert, res, err := r.challengeCert(ctx, hello)
			result = res
			return cert, err
		},
	}
	tc := tls.Server(&bufferedConn{Conn: conn, r: br}, cfg)
	err = tc.HandshakeContext(ctx)
	if result == "" || (result == alpnAnswered && err != nil) {
		// No ClientHello, or the handshake failed after the certificate
		// was chosen.
		result = alpnFailed
	}
	r.count(result)
	if result == alpnAnswered {
		r.log.Info("tls-alpn-01 challenge answered", "name", sni, "client", client)
		_ = tc.Close()
		return
	}
	r.log.Debug("tls-alpn-01 connection refused", "result", result, "name", sni, "client", client, "error", err)
}

// challengeCert returns the challenge certificate for hello, or nil and no
// error to refuse it with unrecognized_name, and the result to count.
func (r *TLSALPNResponder) challengeCert(ctx context.Context, hello *tls.ClientHelloInfo) (*tls.Certificate, string, error) {
	if len(hello.SupportedProtos) != 1 || hello.SupportedProtos[0] != ACMETLS1 {
		return nil, alpnNoACME, nil
	}
	name, err := hostname.Normalize(hello.ServerName)
	if err != nil {
		return nil, alpnUnknown, nil
	}
	lctx, cancel := context.WithTimeout(ctx, r.cfg.LookupTimeout)
	keyAuth, err := r.store.GetChallenge(lctx, store.TLSALPN01Token(name))
	cancel()
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, alpnUnknown, nil
	case err != nil:
		r.log.Error("tls-alpn-01 challenge lookup failed", "name", name, "error", err)
		return nil, alpnStoreError, fmt.Errorf("challenge lookup: %w", err)
	}
	cert, err := ChallengeCertificate(name, keyAuth, time.Now())
	if err != nil {
		r.log.Error("tls-alpn-01 challenge certificate", "name", name, "error", err)
		return nil, alpnStoreError, err
	}
	return cert, alpnAnswered, nil
}

func (r *TLSALPNResponder) count(result string) { r.results[result].Inc() }

// ChallengeCertificate returns the TLS-ALPN-01 challenge certificate for
// name and keyAuth (RFC 8737 section 3): self-signed, with a new ECDSA
// P-256 key, a subjectAltName holding name as its only dNSName, and the
// critical acmeIdentifier extension whose value is the DER OCTET STRING of
// SHA-256(keyAuth). It is valid from an hour before now to a day after.
func ChallengeCertificate(name, keyAuth string, now time.Time) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	digest := sha256.Sum256([]byte(keyAuth))
	ext, err := asn1.Marshal(digest[:]) // Authorization ::= OCTET STRING (SIZE (32))
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:    serial,
		Subject:         pkix.Name{CommonName: "certserver tls-alpn-01 challenge"},
		NotBefore:       now.Add(-time.Hour),
		NotAfter:        now.Add(24 * time.Hour),
		DNSNames:        []string{name},
		KeyUsage:        x509.KeyUsageDigitalSignature,
		ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		ExtraExtensions: []pkix.Extension{{Id: idPeAcmeIdentifier, Critical: true, Value: ext}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// bufferedConn is a connection whose first bytes were read into r (with
// the PROXY header): reads go through r, which holds what followed it.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(b []byte) (int, error) { return c.r.Read(b) }
