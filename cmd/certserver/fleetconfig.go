package main

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/certserver/certserver/renewer"
)

// fleetConfig is the [fleet] section: with it, every host of a fleet
// shares one PostgreSQL database as the source of truth, and the host's
// Badger store at store.path becomes its local copy of what the handshake
// path and the challenge endpoint read. Without it (no [fleet] in the
// file) the host's Badger store is the whole truth, as always.
type fleetConfig struct {
	// DatabaseURL is the PostgreSQL connection string (URL or key=value
	// form). A secret: it is never logged nor shown. Exactly one of it
	// and DatabaseURLFile is set.
	DatabaseURL secret `toml:"database_url"`
	// DatabaseURLFile is a file holding the connection string alone on
	// one line, as admin.token_file holds the token.
	DatabaseURLFile string `toml:"database_url_file"`
	// HostName is this host's name in the fleet's hosts table. Default
	// the machine's host name (os.Hostname).
	HostName string `toml:"host_name"`
	// LeaseTTL is how long a renewing host's lease on a name lasts
	// unless renewed (every third of it while the host works on the
	// name): after a host dies or is cut off, how long its names wait
	// before another host claims them. Default 2 minutes; 3s to 1h.
	LeaseTTL duration `toml:"lease_ttl"`
	// PoolSize is the most connections this host opens to PostgreSQL,
	// the one that listens for notifications included. Default 10.
	PoolSize int `toml:"pool_size"`
	// Renew says whether this host's renewer orders certificates.
	// Default true; false serves only (the admin API still works).
	Renew bool `toml:"renew"`
}

// Defaults of fleetConfig.
const (
	defaultFleetPoolSize = 10
	// minFleetPoolSize leaves a connection for the admin API and the
	// renewer beside the one that listens.
	minFleetPoolSize = 2
	maxFleetPoolSize = 1000
	// Bounds of lease_ttl: the renewer renews a lease every third of
	// it, and a dead host's names wait for it.
	minLeaseTTL = duration(3 * time.Second)
	maxLeaseTTL = duration(time.Hour)
)

// defaultFleetConfig returns [fleet]'s defaults; host_name is filled in
// by validate (os.Hostname) when the section is there.
func defaultFleetConfig() fleetConfig {
	return fleetConfig{PoolSize: defaultFleetPoolSize, Renew: true, LeaseTTL: duration(renewer.DefaultLeaseTTL)}
}

// secret is a configuration value that must never be printed: %v, %s,
// %#v, slog and JSON all show it as [redacted]. Use string(s) where the
// value itself is needed (handing it to the database driver).
type secret string

const redacted = "[redacted]"

func (s secret) String() string   { return redactedOr(s) }
func (s secret) GoString() string { return redactedOr(s) }

// MarshalText keeps the value out of JSON, TOML and slog output.
func (s secret) MarshalText() ([]byte, error) { return []byte(redactedOr(s)), nil }

// UnmarshalText keeps decoding from TOML a plain assignment
// (MarshalText would otherwise make the decoder expect the redacted
// form back).
func (s *secret) UnmarshalText(b []byte) error { *s = secret(b); return nil }

func redactedOr(s secret) string {
	if s == "" {
		return ""
	}
	return redacted
}

// fleetEnabled reports whether the configuration runs a fleet host.
func (c *config) fleetEnabled() bool {
	return c.Fleet.DatabaseURL != "" || c.Fleet.DatabaseURLFile != ""
}

// renews reports whether this host's renewer orders certificates: it may
// (a single host, or a fleet host with renew on) and can (acme.directory
// is set). The one place that decides it: serve starts the renewer, the
// fleet reports the host and the start line says so by it.
func (c *config) renews() bool {
	return c.ACME.Directory != "" && (!c.fleetEnabled() || c.Fleet.Renew)
}

// onDemandRecordsOnly reports whether this host checks on-demand requests
// without ordering: a fleet host that does not renew, with [on_demand]
// configured. The names it allows go into the fleet's database, and the
// renewing hosts order them from the due index.
func (c *config) onDemandRecordsOnly() bool {
	return c.fleetEnabled() && c.OnDemand.enabled() && !c.renews()
}

// validateFleet checks the [fleet] section when the file has one
// (defined), and fills in the default host name.
func (c *config) validateFleet(defined bool, bad func(key, format string, args ...any)) {
	f := &c.Fleet
	if !defined {
		return
	}
	switch {
	case f.DatabaseURL == "" && f.DatabaseURLFile == "":
		bad("fleet.database_url", "[fleet] needs the PostgreSQL database: set database_url_file (a file holding the URL, mode 0600) or database_url")
	case f.DatabaseURL != "" && f.DatabaseURLFile != "":
		bad("fleet.database_url", "database_url and database_url_file are both set: keep one")
	case f.DatabaseURL != "":
		if err := checkDatabaseURL(string(f.DatabaseURL)); err != nil {
			bad("fleet.database_url", "%v", err)
		}
	}
	if c.Store.KeyEncryptionKeyFile == "" {
		bad("store.key_encryption_key_file", "is required with [fleet]: private keys are kept encrypted in the shared database; "+
			"create it once with 'install -m 600 /dev/null /etc/certserver/kek; certserver keys generate >> /etc/certserver/kek' and give every host of the fleet the same file")
	}
	if f.PoolSize < minFleetPoolSize || f.PoolSize > maxFleetPoolSize {
		bad("fleet.pool_size", "%d is not from %d to %d (one connection listens for changes, the others serve the admin API and the renewer)",
			f.PoolSize, minFleetPoolSize, maxFleetPoolSize)
	}
	if f.LeaseTTL < minLeaseTTL || f.LeaseTTL > maxLeaseTTL {
		bad("fleet.lease_ttl", "%v is not from %v to %v", f.LeaseTTL, minLeaseTTL, maxLeaseTTL)
	}
	if f.HostName == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			bad("fleet.host_name", "not set, and the machine's host name is unknown (%v): set host_name", err)
		}
		f.HostName = h
	}
	if len(f.HostName) > 255 || strings.ContainsFunc(f.HostName, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		bad("fleet.host_name", "%q: want at most 255 characters without spaces or control characters", f.HostName)
	}
}

// checkDatabaseURL refuses what is plainly not a PostgreSQL connection
// string, without ever quoting it (it may hold a password). The driver
// checks the rest when it connects.
func checkDatabaseURL(s string) error {
	t := strings.TrimSpace(s)
	if t == "" {
		return errors.New("empty: want a PostgreSQL URL such as postgres://certserver@db.internal:5432/certserver")
	}
	if strings.ContainsAny(t, "\r\n") {
		return errors.New("spans several lines: want the connection string on one line")
	}
	if strings.Contains(t, "://") {
		u, err := url.Parse(t)
		if err != nil {
			// url's error quotes the input: say where it is wrong only.
			return errors.New("not a valid URL (the value is not shown: it may hold a password)")
		}
		if u.Scheme != "postgres" && u.Scheme != "postgresql" {
			return fmt.Errorf("scheme %q: want postgres:// or postgresql://", u.Scheme)
		}
		return nil
	}
	if !strings.Contains(t, "=") {
		return errors.New("neither a postgres:// URL nor key=value settings (the value is not shown: it may hold a password)")
	}
	return nil
}

// databaseURL returns the connection string: database_url, else the
// content of database_url_file, which must hold it alone on one line
// (white space around it dropped). Errors name the file, never the value.
func (f fleetConfig) databaseURL() (string, error) {
	if f.DatabaseURL != "" {
		return strings.TrimSpace(string(f.DatabaseURL)), nil
	}
	b, err := os.ReadFile(f.DatabaseURLFile)
	if err != nil {
		return "", fmt.Errorf("fleet.database_url_file: %w", err)
	}
	line, err := checkToken(string(b))
	if err != nil {
		return "", fmt.Errorf("fleet.database_url_file %s: %w", f.DatabaseURLFile, err)
	}
	if err := checkDatabaseURL(line); err != nil {
		return "", fmt.Errorf("fleet.database_url_file %s: %w", f.DatabaseURLFile, err)
	}
	return line, nil
}
