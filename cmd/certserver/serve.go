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

	"github.com/certserver/certserver/certserver"
	"github.com/certserver/certserver/store"
)

const serveHelp = `
Runs the sidecar beside nginx until SIGTERM or SIGINT:

  - the certificate endpoint nginx's ssl_certificate_by_lua hook calls,
    GET /v1/certs/{name}, on a unix socket and/or a loopback address;
  - the admin API the other certserver commands talk to, on a loopback
    address, guarded by a bearer token;
  - the certificate store, a Badger database in a directory.

The configuration file is TOML; deploy/certserver.toml documents every key.
An unknown key or a bad value stops the start with an error naming the key.
The admin token is read from admin.token_file, or from the environment
variable CERTSERVER_ADMIN_TOKEN, which takes precedence.

On SIGTERM or SIGINT the listeners close, requests in flight finish, the
socket file is removed and the store is closed. A second signal kills.

Examples:
  certserver serve --config /etc/certserver/certserver.toml
  CERTSERVER_ADMIN_TOKEN=$(cat token) certserver serve --config ./dev.toml
`

func runServe(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet("serve", "[--config FILE]", serveHelp)
	configPath := fs.String("config", defaultConfigPath, "the configuration `file`")
	rest, code, ok := fs.parse(e, args)
	if !ok {
		return code
	}
	if len(rest) > 0 {
		return usageError(e, "serve", "unexpected argument %q", rest[0])
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

	var token string
	if cfg.Admin.Enabled {
		t, err := adminToken(e, cfg, logger)
		if err != nil {
			return err
		}
		token = t
	}

	st, err := store.OpenBadger(cfg.Store.Path, store.BadgerOptions{Logger: logger.With("subsystem", "store")})
	if err != nil {
		return fmt.Errorf("open store %s: %w", cfg.Store.Path, err)
	}
	defer func() {
		if err := st.Close(); err != nil {
			logger.Error("close store", "error", err)
		}
	}()

	certs, err := certserver.NewCertEndpoint(certserver.CertEndpointConfig{
		Socket:           cfg.Certs.Socket,
		SocketMode:       fs.FileMode(cfg.Certs.SocketMode),
		SocketGroup:      cfg.Certs.SocketGroup,
		Listen:           cfg.Certs.Listen,
		AllowNonLoopback: cfg.Certs.AllowNonLoopback,
		MaxAge:           cfg.Certs.MaxAge.std(),
		MinAge:           cfg.Certs.MinAge.std(),
		NotFoundMaxAge:   cfg.Certs.NotFoundMaxAge.std(),
	}, st, logger)
	if err != nil {
		return err
	}
	var admin *certserver.AdminAPI
	if cfg.Admin.Enabled {
		admin, err = certserver.NewAdminAPI(certserver.AdminConfig{
			Listen:           cfg.Admin.Listen,
			AllowNonLoopback: cfg.Admin.AllowNonLoopback,
			Token:            token,
			MaxBody:          cfg.Admin.MaxBody,
		}, st, logger)
		if err != nil {
			return err
		}
	}

	if err := certs.Listen(ctx); err != nil {
		return err
	}
	if admin != nil {
		if err := admin.Listen(ctx); err != nil {
			certs.Close()
			return err
		}
	}

	attrs := []any{"version", version(), "store", cfg.Store.Path}
	for _, a := range certs.Addrs() {
		attrs = append(attrs, "certs_"+a.Network(), a.String())
	}
	if admin != nil {
		attrs = append(attrs, "admin", "http://"+admin.Addrs()[0].String())
	} else {
		attrs = append(attrs, "admin", "disabled")
	}
	logger.Info("certserver started: "+describeListeners(certs.Addrs(), admin), attrs...)

	// Both servers stop when ctx is done or when either fails.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopLog := context.AfterFunc(ctx, func() { logger.Info("shutting down") })
	defer stopLog()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	wg.Go(func() {
		errs[0] = certs.Serve(ctx)
		cancel()
	})
	if admin != nil {
		wg.Go(func() {
			errs[1] = admin.Serve(ctx)
			cancel()
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	logger.Info("certserver stopped")
	return nil
}

// describeListeners says in words where the servers listen.
func describeListeners(certs []net.Addr, admin *certserver.AdminAPI) string {
	var parts []string
	for _, a := range certs {
		if a.Network() == "unix" {
			parts = append(parts, "certificates on unix socket "+a.String())
		} else {
			parts = append(parts, "certificates on http://"+a.String())
		}
	}
	if admin != nil {
		parts = append(parts, "admin API on http://"+admin.Addrs()[0].String())
	}
	return strings.Join(parts, ", ")
}

// adminToken returns the admin token: CERTSERVER_ADMIN_TOKEN, else the
// content of admin.token_file without surrounding white space.
func adminToken(e *env, cfg config, logger *slog.Logger) (string, error) {
	if t := strings.TrimSpace(e.getenv("CERTSERVER_ADMIN_TOKEN")); t != "" {
		return t, nil
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

// readTokenFile reads a token file: its content without surrounding white
// space, which must not be empty.
func readTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("%s is empty", path)
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
