package dnszone

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/hostname"
	"github.com/miekg/dns"
)

// Defaults of Config.
const (
	// DefaultListen is where the zone listens, UDP and TCP: port 53 of
	// every address, where the CA's resolvers ask.
	DefaultListen = ":53"
	// DefaultTTL is the TTL of the TXT answers and of negative answers
	// (the SOA minimum): one second, since values come and go within an
	// order and a cached "no such name" would hide the next one.
	DefaultTTL = time.Second
	// apexTTL is the TTL of the apex SOA and NS records and of the
	// nameservers' addresses, which change only with the configuration.
	apexTTL = 3600
)

// Config configures a Server. Zero fields take the defaults stated.
type Config struct {
	// Zone is the zone served. Required.
	Zone Zone
	// Listen is the UDP and TCP address, "host:port". Default DefaultListen.
	Listen string
	// Nameservers are the zone's NS records, host names, the first one
	// also the SOA's primary. They should be the names the parent zone
	// delegates to. Default: "ns.<zone>".
	Nameservers []string
	// NameserverAddrs are answered as the A and AAAA records of every
	// nameserver inside the zone (such as the default "ns.<zone>"), the
	// addresses the parent's glue records hold. Default none: those names
	// exist without addresses.
	NameserverAddrs []netip.Addr
	// Contact is the mailbox of the zone's SOA record, as an address
	// ("hostmaster@hoster.example") or in its DNS form. Default
	// "hostmaster.<zone>".
	Contact string
	// TTL is the TTL of TXT answers and of negative answers, in whole
	// seconds. Default DefaultTTL.
	TTL time.Duration
	// Shared is the fleet's shared store, read together with the local
	// one (values.get). Default nil: a single host, the local store is the
	// whole truth.
	Shared store.Store
	// Metrics counts the queries. Default nil: not counted.
	Metrics *Metrics
	// Now returns the current time, for the SOA serial. Default time.Now.
	Now func() time.Time
}

// Check returns the error New would return for cfg's own values (not its
// stores), so that a configuration file is checked before anything
// starts.
func (cfg Config) Check() error {
	cfg.Nameservers = append([]string(nil), cfg.Nameservers...)
	_, err := cfg.withDefaults()
	return err
}

func (cfg Config) withDefaults() (Config, error) {
	if cfg.Zone.name == "" {
		return cfg, errors.New("dns zone: no zone name")
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if _, _, err := net.SplitHostPort(cfg.Listen); err != nil {
		return cfg, fmt.Errorf("dns zone listen %q: want host:port: %w", cfg.Listen, err)
	}
	if len(cfg.Nameservers) == 0 {
		cfg.Nameservers = []string{"ns." + cfg.Zone.name}
	}
	for i, ns := range cfg.Nameservers {
		n, err := hostname.Normalize(strings.TrimSuffix(ns, "."))
		if err != nil {
			return cfg, fmt.Errorf("dns zone nameserver %q: %w", ns, err)
		}
		cfg.Nameservers[i] = n
	}
	for _, a := range cfg.NameserverAddrs {
		if !a.IsValid() {
			return cfg, errors.New("dns zone nameserver address: invalid address")
		}
	}
	if cfg.Contact == "" {
		cfg.Contact = "hostmaster." + cfg.Zone.name
	}
	contact, err := mailbox(cfg.Contact)
	if err != nil {
		return cfg, err
	}
	cfg.Contact = contact
	switch {
	case cfg.TTL == 0:
		cfg.TTL = DefaultTTL
	case cfg.TTL < time.Second || cfg.TTL > 24*time.Hour:
		return cfg, fmt.Errorf("dns zone ttl %v: want 1s to 24h", cfg.TTL)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return cfg, nil
}

// mailbox turns a contact address into the RNAME of an SOA record (RFC
// 1035 section 3.3.13): "hostmaster@hoster.example" becomes
// "hostmaster.hoster.example."; a name already in that form is kept.
func mailbox(contact string) (string, error) {
	local, domain, ok := strings.Cut(contact, "@")
	if !ok {
		local, domain, ok = strings.Cut(strings.TrimSuffix(contact, "."), ".")
	}
	if !ok || local == "" || strings.ContainsAny(local, " \t\\") {
		return "", fmt.Errorf("dns zone contact %q: want an address like hostmaster@hoster.example", contact)
	}
	d, err := hostname.Normalize(strings.TrimSuffix(domain, "."))
	if err != nil {
		return "", fmt.Errorf("dns zone contact %q: %w", contact, err)
	}
	return dns.Fqdn(strings.ReplaceAll(local, ".", `\.`) + "." + d), nil
}

// Server is the zone's authoritative DNS server, over UDP and TCP on one
// address. It answers from the store's challenge records on every query
// (nothing cached in between), so a value put by any host of a fleet is
// answered as soon as this host's copy, or the shared store, has it. Its
// methods are safe for concurrent use.
type Server struct {
	cfg    Config
	log    *slog.Logger
	values *values
	zone   zoneData

	// lastWarn is when a store failure was last logged (Unix
	// nanoseconds): at most one line a minute, however many queries fail.
	lastWarn atomic.Int64

	mu      sync.Mutex
	pc      net.PacketConn
	ln      net.Listener
	servers []*dns.Server
}

// New returns a Server for cfg reading the challenge records of st (the
// local store), which must have store.ChallengeLister (found with
// store.As), as must cfg.Shared.
func New(cfg Config, st store.Store, logger *slog.Logger) (*Server, error) {
	if logger == nil {
		return nil, errors.New("dns zone: nil logger")
	}
	cfg.Nameservers = append([]string(nil), cfg.Nameservers...)
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	v, err := newValues(st, cfg.Shared)
	if err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, log: logger.With("subsystem", "dns_zone"), values: v, zone: newZoneData(cfg)}, nil
}

// Listen binds the UDP and TCP sockets of the configured address (port 0:
// one port picked for both). It returns an error naming the address when
// either is taken.
func (s *Server) Listen(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pc != nil {
		return errors.New("dns zone: already listening")
	}
	var lastErr error
	for range 20 {
		var lc net.ListenConfig
		pc, err := lc.ListenPacket(ctx, "udp", s.cfg.Listen)
		if err != nil {
			return fmt.Errorf("dns zone: listen udp %s: %w", s.cfg.Listen, err)
		}
		ln, err := lc.Listen(ctx, "tcp", pc.LocalAddr().String())
		if err == nil {
			s.pc, s.ln = pc, ln
			return nil
		}
		_ = pc.Close()
		lastErr = err
		if _, port, _ := net.SplitHostPort(s.cfg.Listen); port != "0" {
			break
		}
	}
	return fmt.Errorf("dns zone: listen tcp %s: %w", s.cfg.Listen, lastErr)
}

// Addr returns the bound address, the same for UDP and TCP ("" before
// Listen).
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pc == nil {
		return ""
	}
	return s.pc.LocalAddr().String()
}

// Serve answers queries on the sockets Listen bound until ctx is done,
// then stops and returns nil; it returns an error when a socket fails.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	if s.pc == nil {
		s.mu.Unlock()
		return errors.New("dns zone: serve before listen")
	}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) { s.serveDNS(ctx, w, req) })
	udp := &dns.Server{PacketConn: s.pc, Handler: handler, UDPSize: maxQuerySize + 1,
		MsgAcceptFunc: acceptQuery, MsgInvalidFunc: s.invalid, DecorateReader: s.limitReader}
	tcp := &dns.Server{Listener: s.ln, Handler: handler, MsgAcceptFunc: acceptQuery,
		MsgInvalidFunc: s.invalid, DecorateReader: s.limitReader,
		ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second, IdleTimeout: func() time.Duration { return 10 * time.Second }}
	s.servers = []*dns.Server{udp, tcp}
	s.mu.Unlock()

	s.log.Info("dns zone serving", "zone", s.cfg.Zone.name, "listen", s.Addr(), "nameservers", strings.Join(s.cfg.Nameservers, " "))
	errs := make(chan error, 2)
	for _, srv := range []*dns.Server{udp, tcp} {
		go func() { errs <- srv.ActivateAndServe() }()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errs:
	}
	for _, srv := range []*dns.Server{udp, tcp} {
		_ = srv.Shutdown()
	}
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("dns zone on %s: %w", s.Addr(), err)
	}
	return nil
}

// Close releases the sockets of a Server that Serve does not run (Serve
// closes them when it returns).
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.servers != nil || s.pc == nil {
		return nil
	}
	return errors.Join(s.pc.Close(), s.ln.Close())
}

// storeWarnEvery is the least time between two log lines about the store
// failing, which every query then does.
const storeWarnEvery = time.Minute

// warnStore logs that the values of label could not be read (answered
// SERVFAIL), at most once every storeWarnEvery; the metrics count every
// one.
func (s *Server) warnStore(label string, err error) {
	now := s.cfg.Now().UnixNano()
	last := s.lastWarn.Load()
	if now-last < int64(storeWarnEvery) || !s.lastWarn.CompareAndSwap(last, now) {
		return
	}
	s.log.Warn("dns zone: cannot read the challenge values from the store; answering SERVFAIL (logged once a minute at most; certserver_dns_zone_queries_total{result=\"servfail\"} counts them)",
		"label", label, "err", err)
}

// invalid counts a message that did not parse; it is not answered.
func (s *Server) invalid(_ []byte, _ error) { s.cfg.Metrics.query(0, resultMalformed) }
