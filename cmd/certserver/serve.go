package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/certserver/certserver/certserver"
	"github.com/certserver/certserver/renewer"
	"github.com/certserver/certserver/renewer/dnszone"
	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/sealed"
)

const serveHelp = `
Runs the sidecar beside nginx until SIGTERM or SIGINT:

  - the certificate endpoint nginx's ssl_certificate_by_lua hook calls,
    GET /v1/certs/{name}, on a unix socket and/or a loopback address,
    with the intermediates of the chains it served by digest,
    GET /v1/chains/{digest}, and its change feed GET /v1/changes, which
    nginx's workers poll to drop replaced and removed certificates within
    a second (during a wave of changes, a renewal within half of the Lua
    option prewarm_wait);
  - the ACME challenge endpoint nginx's port 80 proxies
    /.well-known/acme-challenge/ to (challenge.listen, 127.0.0.1:9402);
  - with tls_alpn.listen set, the TLS-ALPN-01 responder nginx's stream
    snippet (certserver-stream.conf, on port 443) sends the CA's
    acme-tls/1 connections to; orders may then be validated over
    TLS-ALPN-01, which lego prefers when the CA offers both;
  - the admin API the other certserver commands talk to, on a loopback
    address, guarded by a bearer token;
  - with acme.directory set, the renewer: it obtains certificates for the
    names added with 'certserver domains add' and renews them, and, when
    [on_demand] has a check, for names nginx is asked for; it checks DNS
    and CAA before every order ([preflight]), paces orders to each CA's
    rate limits ([acme.limits]) and can fall back to further CAs
    ([[acme.fallback]]); each certificate gets a new private key, or,
    with [keys] reuse = "pool", a key shared from a pool kept in the
    store (pool_size keys of acme.key_type, each replaced after
    rotation), so that nginx parses one key for many names;
  - the certificate store, a Badger database in a directory; with
    [store] key_encryption_key_file set, the private keys in it are
    encrypted (AES-256-GCM) under the last key of that file, and a key
    that cannot be decrypted is never served (see 'certserver keys');
    the records lookups read are kept in memory as stored, up to
    [store] record_cache (192MiB; "0" for none), so that a name asked
    for again reads nothing from the store's files;
  - with [fleet], the fleet's PostgreSQL database is the store of record
    (names, certificates, accounts, challenges, rate limits, shared by
    every host), and the Badger store becomes this host's local copy of
    its certificates and challenges, kept in step within about a second
    of every change: nginx's handshakes and the CA's HTTP-01 requests are
    answered from it, so they go on while the database is down (admin
    writes then answer 503 and nothing is ordered until it is back).

The configuration file is TOML; deploy/certserver.toml documents every key.
An unknown key or a bad value stops the start with an error naming the key.
The admin token is read from admin.token_file, or from the environment
variable CERTSERVER_ADMIN_TOKEN, which takes precedence.

On SIGTERM or SIGINT the listeners close, requests in flight finish, orders
under way are abandoned (their names stay due and are picked up at the next
start), the socket file is removed and the store is closed. A second
signal kills.

Examples:
  certserver serve --config /etc/certserver/certserver.toml
  CERTSERVER_ADMIN_TOKEN=$(cat token) certserver serve --config ./dev.toml
`

func runServe(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet("serve", "[--config FILE]", serveHelp)
	configPath := fs.String("config", defaultConfigPath, "the configuration `file`")
	if code, ok := fs.parseNone(e, args); !ok {
		return code
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		return fail(e, "serve", err)
	}
	if err := serve(ctx, e, cfg); err != nil {
		return fail(e, "serve", err)
	}
	return exitOK
}

// serve runs the sidecar described by cfg until ctx is done.
func serve(ctx context.Context, e *env, cfg config) error {
	logger := newLogger(e.stderr, cfg.Log)
	cfg.warnDeprecated(logger)

	var token string
	if cfg.Admin.Enabled {
		t, err := adminToken(e, cfg, logger)
		if err != nil {
			return err
		}
		token = t
	}

	var files []*acmeFiles
	if cfg.ACME.Directory != "" {
		f, err := readACMEFiles(cfg.ACME)
		if err != nil {
			return err
		}
		files = f
	}

	keyring, err := loadKeyring(cfg.Store)
	if err != nil {
		return err
	}
	badger, err := store.OpenBadger(cfg.Store.Path, cfg.Store.badgerOptions(logger.With("subsystem", "store")))
	if err != nil {
		return fmt.Errorf("open store %s: %w", cfg.Store.Path, err)
	}
	// Every part reads and writes through the decorator: with a keyring it
	// encrypts private keys at rest; without, it refuses to hand out a key
	// that was encrypted.
	local := sealed.Wrap(badger, keyring)
	// Deferred first, so it runs last: after the servers and the renewer
	// have stopped.
	defer func() {
		if err := local.Close(); err != nil {
			logger.Error("close store", "error", err)
		}
	}()

	// st is the store of record, which the admin API, the renewer and the
	// metrics read and write: the local Badger store, or on a fleet host
	// the fleet's database. The certificate and challenge endpoints read
	// the local store (on a fleet host the copy the follower keeps).
	var st store.Store = local
	var inventory store.Store = badger
	var fleet *fleetHost
	if cfg.fleetEnabled() {
		if fleet, err = newFleetHost(cfg, keyring, badger, logger); err != nil {
			return err
		}
		defer func() {
			if err := fleet.Close(); err != nil {
				logger.Error("close the fleet's database", "error", err)
			}
		}()
		st, inventory = fleet.store, fleet.shared
	}

	// The metrics and the status page are served by the admin API. The
	// inventory reads no private key: it scans the store below the
	// decorator, without decrypting every key every scan.
	var metrics *certserver.Metrics
	if cfg.Admin.Enabled {
		mcfg := certserver.MetricsConfig{Local: badger}
		if fleet != nil {
			mcfg.Fleet = fleet
		}
		if metrics, err = certserver.NewMetrics(mcfg, inventory, logger); err != nil {
			return err
		}
	}

	var is *issuance
	switch {
	case cfg.renews():
		// A nil *sharedGate must not become a non-nil interface.
		var verdicts store.Verdicts
		if fleet != nil {
			verdicts = fleet.shared
		}
		if is, err = newIssuance(cfg, files, st, verdicts, metrics, logger); err != nil {
			return err
		}
		if fleet != nil {
			fleet.setRenewer(is.renewer)
		}
	case files != nil:
		logger.Info("fleet.renew is false: this host orders nothing; the fleet's other hosts renew")
	case cfg.OnDemand.enabled() && !cfg.fleetEnabled():
		logger.Warn("on_demand is configured but acme.directory is not: on-demand issuance is off")
	}
	// A fleet host that does not renew still checks on-demand requests
	// and records the names allowed, which the renewing hosts order.
	var onDemand *renewer.OnDemand
	switch {
	case is != nil:
		onDemand = is.onDemand
	case cfg.onDemandRecordsOnly():
		if onDemand, err = newOnDemand(cfg, st, fleet.shared, nil, nil, logger); err != nil {
			return err
		}
	}

	certsCfg := certserver.CertEndpointConfig{
		Socket:           cfg.Certs.Socket,
		SocketMode:       fs.FileMode(cfg.Certs.SocketMode),
		SocketGroup:      cfg.Certs.SocketGroup,
		Listen:           cfg.Certs.Listen,
		AllowNonLoopback: cfg.Certs.AllowNonLoopback,
		MaxAge:           cfg.Certs.MaxAge.std(),
		MinAge:           cfg.Certs.MinAge.std(),
		NotFoundMaxAge:   cfg.Certs.NotFoundMaxAge.std(),
		Metrics:          metrics,
	}
	// A nil *renewer.OnDemand must not become a non-nil interface.
	if onDemand != nil {
		certsCfg.OnDemand = onDemand
	}
	certs, err := certserver.NewCertEndpoint(certsCfg, local, logger)
	if err != nil {
		return err
	}
	var challenge *certserver.ChallengeEndpoint
	if cfg.Challenge.Listen != "" {
		var challenges store.Store = local
		if fleet != nil {
			challenges = fleetChallenges{Store: local, shared: fleet.store}
		}
		challenge, err = certserver.NewChallengeEndpoint(certserver.ChallengeConfig{
			Listen:           cfg.Challenge.Listen,
			AllowNonLoopback: cfg.Challenge.AllowNonLoopback,
		}, challenges, logger)
		if err != nil {
			return err
		}
	}
	var alpn *certserver.TLSALPNResponder
	if cfg.TLSALPN.Listen != "" {
		// Any host of a fleet answers: its local copy, then the database
		// on a miss, as the HTTP-01 endpoint does.
		var challenges store.Store = local
		if fleet != nil {
			challenges = fleetChallenges{Store: local, shared: fleet.store}
		}
		acfg := certserver.TLSALPNConfig{Listen: cfg.TLSALPN.Listen, AllowNonLoopback: cfg.TLSALPN.AllowNonLoopback}
		if metrics != nil {
			acfg.Registerer = metrics.Registerer()
		}
		if alpn, err = certserver.NewTLSALPNResponder(acfg, challenges, logger); err != nil {
			return err
		}
	}
	var zone *dnszone.Server
	if cfg.DNS01.Zone.enabled() {
		var shared store.Store
		if fleet != nil {
			shared = fleet.store
		}
		if zone, err = newDNSZone(cfg, local, shared, metrics, logger); err != nil {
			return err
		}
	}
	var admin *certserver.AdminAPI
	if cfg.Admin.Enabled {
		adminCfg := certserver.AdminConfig{
			Listen:           cfg.Admin.Listen,
			AllowNonLoopback: cfg.Admin.AllowNonLoopback,
			Token:            token,
			MaxBody:          int(cfg.Admin.MaxBody),
			MaxDomainsBody:   int(cfg.Admin.MaxDomainsBody),
			Metrics:          metrics,
			Ready:            func(ctx context.Context) error { return dialEach(ctx, certs.Addrs()) },
		}
		if keyring != nil {
			adminCfg.Keys = local
			if fleet != nil {
				adminCfg.Keys = fleet.store
			}
		}
		if fleet != nil {
			// Alive and ready while the database is down: the host
			// serves from its copy.
			adminCfg.Fleet, adminCfg.HealthStore = fleet, local
		}
		if cfg.DNS01.Zone.enabled() {
			z, _, err := cfg.DNS01.Zone.zone()
			if err != nil {
				return fmt.Errorf("dns01.zone: %w", err)
			}
			adminCfg.DNS01Record = zoneRecordFunc(z, cfg.challengeChoice())
		}
		if is != nil {
			adminCfg.Scheduler = is.renewer
			adminCfg.Queue = queueStats{is.renewer}
			adminCfg.Revoker = caRevoker(is.issuers)
		}
		admin, err = certserver.NewAdminAPI(adminCfg, st, logger)
		if err != nil {
			return err
		}
	}

	// Bind everything before serving anything; on failure release what was
	// bound.
	var bound []interface{ Close() error }
	release := func() {
		for _, b := range bound {
			b.Close()
		}
	}
	if err := certs.Listen(ctx); err != nil {
		return err
	}
	bound = append(bound, certs)
	if challenge != nil {
		if err := challenge.Listen(ctx); err != nil {
			release()
			return err
		}
		bound = append(bound, challenge)
	}
	if alpn != nil {
		if err := alpn.Listen(ctx); err != nil {
			release()
			return err
		}
		bound = append(bound, alpn)

	}
	if zone != nil {
		if err := zone.Listen(ctx); err != nil {
			release()
			return err
		}
		bound = append(bound, zone)
	}
	if admin != nil {
		if err := admin.Listen(ctx); err != nil {
			release()
			return err
		}
	}

	// The warning comes before the start line, which scripts and tests
	// wait for: whoever reads the log from there has it.
	if w := socketGroupWarning(cfg.Certs, stockNginxConf); w != nil {
		logger.Warn(w.msg, w.attrs...)
	}
	logStart(logger, cfg, keyring, certs, challenge, alpn, admin, is)

	// Everything stops when ctx is done or when a server fails; the store
	// closes once all of it has stopped.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopLog := context.AfterFunc(ctx, func() { logger.Info("shutting down") })
	defer stopLog()
	var wg sync.WaitGroup
	errs := make([]error, 8)
	wg.Go(func() {
		errs[0] = certs.Serve(ctx)
		cancel()
	})
	if challenge != nil {
		wg.Go(func() {
			errs[1] = challenge.Serve(ctx)
			cancel()
		})
	}
	if admin != nil {
		wg.Go(func() {
			errs[2] = admin.Serve(ctx)
			cancel()
		})
	}
	if alpn != nil {
		wg.Go(func() {
			errs[6] = alpn.Serve(ctx)
			cancel()
		})
	}
	if zone != nil {
		wg.Go(func() {
			errs[7] = zone.Serve(ctx)
			cancel()
		})
	}
	if metrics != nil {
		wg.Go(func() { metrics.Run(ctx) })
	}
	if fleet != nil {
		wg.Go(func() {
			select {
			case <-fleet.shared.Tried():
			case <-ctx.Done():
				return
			}
			errs[4] = fleet.follower.Run(ctx)
			cancel()
		})
		wg.Go(func() {
			if errs[5] = fleet.connect(ctx, cfg, logger); errs[5] != nil {
				cancel()
			}
		})
		wg.Go(func() { fleet.watchLeases(ctx, logger.With("subsystem", "fleet")) })
	}
	if is != nil {
		wg.Go(func() {
			// On a fleet host the renewer starts once the database is
			// open: it orders nothing the fleet could not record, and
			// its limiters spend the fleet's rate-limit buckets there.
			if fleet != nil {
				select {
				case <-fleet.shared.Opened():
				case <-ctx.Done():
					return
				}
			}
			errs[3] = is.run(ctx)
			cancel()
		})
	}
	if is == nil && onDemand != nil {
		// As the renewer's: requests wait in its queue until the
		// database is open.
		wg.Go(func() {
			select {
			case <-fleet.shared.Opened():
			case <-ctx.Done():
				return
			}
			onDemand.Run(ctx)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	logger.Info("certserver stopped")
	return nil
}

// logStart writes the start line: where the servers listen and whether
// issuance and on-demand issuance are on, in words and as attributes.
func logStart(logger *slog.Logger, cfg config, keyring *sealed.Keyring, certs *certserver.CertEndpoint, challenge *certserver.ChallengeEndpoint,
	alpn *certserver.TLSALPNResponder, admin *certserver.AdminAPI, is *issuance) {
	attrs := []any{"version", version(), "store", cfg.Store.Path}
	if keyring != nil {
		// The key's ID, never the key.
		attrs = append(attrs, "key_encryption_key", keyring.Current())
	} else {
		attrs = append(attrs, "key_encryption_key", "none")
	}
	var parts []string
	for _, a := range certs.Addrs() {
		attrs = append(attrs, "certs_"+a.Network(), a.String())
		if a.Network() == "unix" {
			parts = append(parts, "certificates on unix socket "+a.String())
		} else {
			parts = append(parts, "certificates on http://"+a.String())
		}
	}
	if challenge != nil {
		addr := "http://" + challenge.Addrs()[0].String()
		attrs = append(attrs, "challenge", addr)
		parts = append(parts, "ACME challenges on "+addr)
	} else {
		attrs = append(attrs, "challenge", "disabled")
	}
	if alpn != nil {
		addr := alpn.Addr().String()
		attrs = append(attrs, "tls_alpn", addr)
		parts = append(parts, "TLS-ALPN-01 challenges on "+addr)
	}
	if admin != nil {
		addr := "http://" + admin.Addrs()[0].String()
		attrs = append(attrs, "admin", addr)
		parts = append(parts, "admin API on "+addr)
	} else {
		attrs = append(attrs, "admin", "disabled")
	}
	if cfg.fleetEnabled() {
		// The host's name, never the database's URL.
		parts = append(parts, "fleet host "+cfg.Fleet.HostName)
		attrs = append(attrs, "fleet_host", cfg.Fleet.HostName, "fleet_renews", cfg.renews())
	}
	msg := "certserver started: " + strings.Join(parts, ", ")
	switch {
	case is == nil && cfg.onDemandRecordsOnly():
		msg += "; issuance off on this host (the fleet's renewing hosts order), on-demand names checked and recorded for them"
		attrs = append(attrs, "issuance", "off", "on_demand", "records")
	case is == nil && cfg.ACME.Directory != "" && !cfg.renews():
		msg += "; issuance off on this host (fleet.renew = false: the fleet's other hosts renew)"
		attrs = append(attrs, "issuance", "off", "on_demand", "off")
	case is == nil:
		msg += "; issuance off (acme.directory is not set: added names wait)"
		attrs = append(attrs, "issuance", "off", "on_demand", "off")
	default:
		msg += "; issuance on from " + is.directory
		if n := len(is.issuers) - 1; n > 0 {
			msg += fmt.Sprintf(" (+%d fallback CA(s), %s)", n, cfg.ACME.Selection)
		}
		if cfg.Preflight.Enabled {
			msg += ", pre-flight on"
		} else {
			msg += ", pre-flight off"
		}
		attrs = append(attrs, "issuance", is.directory, "cas", len(is.issuers), "workers", cfg.Renewer.Workers, "preflight", cfg.Preflight.Enabled)
		if is.onDemand != nil {
			msg += ", on-demand on"
			attrs = append(attrs, "on_demand", "on")
		} else {
			msg += ", on-demand off"
			attrs = append(attrs, "on_demand", "off")
		}
		if challenge == nil && alpn == nil {
			msg += " (warning: challenge.listen is empty, so HTTP-01 challenges need another responder)"
		}
	}
	logger.Info(msg, attrs...)
}

// adminToken returns the admin token: CERTSERVER_ADMIN_TOKEN, else the
// content of admin.token_file without surrounding white space.
func adminToken(e *env, cfg config, logger *slog.Logger) (string, error) {
	if t, err := envToken(e); t != "" || err != nil {
		return t, err
	}
	if cfg.Admin.TokenFile == "" {
		return "", errors.New("admin API: no token: set admin.token_file or the environment variable " +
			"CERTSERVER_ADMIN_TOKEN (create one with: head -c 32 /dev/urandom | base64 > /etc/certserver/admin.token), " +
			"or set admin.enabled = false")
	}
	t, err := readTokenFile(cfg.Admin.TokenFile)
	if err != nil {
		return "", fmt.Errorf("admin.token_file: %w", err)
	}
	if fi, err := os.Stat(cfg.Admin.TokenFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
		logger.Warn("the admin token file is readable by other users; chmod 600 it",
			"path", cfg.Admin.TokenFile, "mode", fmt.Sprintf("%#o", fi.Mode().Perm()))
	}
	return t, nil
}

// newLogger returns the process's logger, writing to w as cfg says.
func newLogger(w io.Writer, cfg logConfig) *slog.Logger {
	var level slog.Level
	// validate has checked the name.
	_ = level.UnmarshalText([]byte(cfg.Level))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// dialEach connects to every address, and reports the first that does not
// accept: the certificate endpoint is ready when nginx could reach it.
func dialEach(ctx context.Context, addrs []net.Addr) error {
	if len(addrs) == 0 {
		return errors.New("certificate endpoint is not listening")
	}
	var d net.Dialer
	for _, a := range addrs {
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		conn, err := d.DialContext(dctx, a.Network(), a.String())
		cancel()
		if err != nil {
			return fmt.Errorf("certificate endpoint %s:%s: %w", a.Network(), a, err)
		}
		conn.Close()
	}
	return nil
}

// loadKeyring reads the key-encryption keys [store] key_encryption_key_file
// names; nil when it names none.
func loadKeyring(cfg storeConfig) (*sealed.Keyring, error) {
	if cfg.KeyEncryptionKeyFile == "" {
		return nil, nil
	}
	kr, err := sealed.LoadKeyring(cfg.KeyEncryptionKeyFile)
	if err != nil {
		return nil, fmt.Errorf("store.key_encryption_key_file: %w", err)
	}
	return kr, nil
}
