package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/certserver/certserver/certserver"
)

// defaultConfigPath is where serve and the client commands look for the
// configuration file when --config is not given.
const defaultConfigPath = "/etc/certserver/certserver.toml"

// config is the TOML configuration file of `certserver serve`. Every key is
// documented in deploy/certserver.toml; defaultConfig holds the defaults.
type config struct {
	Store storeConfig `toml:"store"`
	Certs certsConfig `toml:"certs"`
	Admin adminConfig `toml:"admin"`
	Log   logConfig   `toml:"log"`
}

type storeConfig struct {
	Path string `toml:"path"`
}

type certsConfig struct {
	Socket           string   `toml:"socket"`
	SocketMode       fileMode `toml:"socket_mode"`
	SocketGroup      string   `toml:"socket_group"`
	Listen           string   `toml:"listen"`
	AllowNonLoopback bool     `toml:"allow_non_loopback"`
	MaxAge           duration `toml:"max_age"`
	MinAge           duration `toml:"min_age"`
	NotFoundMaxAge   duration `toml:"not_found_max_age"`
}

type adminConfig struct {
	Enabled          bool   `toml:"enabled"`
	Listen           string `toml:"listen"`
	AllowNonLoopback bool   `toml:"allow_non_loopback"`
	TokenFile        string `toml:"token_file"`
	MaxBody          int    `toml:"max_body"`
}

type logConfig struct {
	Level  string `toml:"level"`
	Format string `toml:"format"`
}

// defaultConfig returns the configuration an empty file gives.
func defaultConfig() config {
	return config{
		Store: storeConfig{Path: "/var/lib/certserver"},
		Certs: certsConfig{
			Socket:         "/run/certserver/certs.sock",
			SocketMode:     fileMode(certserver.DefaultSocketMode),
			MaxAge:         duration(certserver.DefaultCertMaxAge),
			MinAge:         duration(certserver.DefaultCertMinAge),
			NotFoundMaxAge: duration(certserver.DefaultNotFoundMaxAge),
		},
		Admin: adminConfig{
			Enabled: true,
			Listen:  certserver.DefaultAdminListen,
			MaxBody: certserver.DefaultAdminMaxBody,
		},
		Log: logConfig{Level: "info", Format: "text"},
	}
}

// loadConfig reads the configuration file at path over the defaults. An
// unknown key, a value of the wrong type and a value out of range are
// errors naming the key.
func loadConfig(path string) (config, error) {
	cfg := defaultConfig()
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	if err := parseConfig(string(b), &cfg); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// parseConfig decodes a configuration document into cfg and validates it.
func parseConfig(doc string, cfg *config) error {
	md, err := toml.Decode(doc, cfg)
	if err != nil {
		return err
	}
	if err := unknownKeys(md.Undecoded()); err != nil {
		return err
	}
	return cfg.validate()
}

// unknownKeys returns an error naming the keys the file has and certserver
// does not know, with the keys their section does know.
func unknownKeys(keys []toml.Key) error {
	known := knownKeys()
	var msgs []string
	for _, k := range keys {
		// A key inside an unknown section is reported with the section.
		if len(k) > 1 && slices.ContainsFunc(keys, func(p toml.Key) bool { return len(p) == 1 && p[0] == k[0] }) {
			continue
		}
		section := ""
		if len(k) > 1 {
			section = k[0]
		}
		what := "unknown key " + strconv.Quote(k.String())
		if list, ok := known[section]; ok && section != "" {
			what += " (keys of [" + section + "]: " + strings.Join(list, ", ") + ")"
		} else if len(k) == 1 {
			what += " (sections: " + strings.Join(known[""], ", ") + ")"
		}
		msgs = append(msgs, what)
	}
	if len(msgs) == 0 {
		return nil
	}
	return errors.New(strings.Join(msgs, "; "))
}

// knownKeys lists the keys of every section, and under "" the sections.
func knownKeys() map[string][]string {
	m := map[string][]string{}
	top := reflect.TypeFor[config]()
	for i := range top.NumField() {
		f := top.Field(i)
		section := f.Tag.Get("toml")
		m[""] = append(m[""], section)
		for j := range f.Type.NumField() {
			m[section] = append(m[section], f.Type.Field(j).Tag.Get("toml"))
		}
	}
	return m
}

// validate checks the values the types let through, naming the key.
func (c *config) validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.Store.Path == "" {
		bad("store.path", "must not be empty")
	}
	if c.Certs.Socket == "" && c.Certs.Listen == "" {
		bad("certs.socket", "certs.socket and certs.listen are both empty: the certificate endpoint needs one of them")
	}
	if c.Certs.Listen != "" {
		if err := certserver.CheckLoopback(c.Certs.Listen); err != nil && !(c.Certs.AllowNonLoopback && errors.Is(err, certserver.ErrNotLoopback)) {
			if errors.Is(err, certserver.ErrNotLoopback) {
				bad("certs.listen", "%v; private keys travel over this endpoint: use certs.socket or a loopback address, or set certs.allow_non_loopback = true", err)
			} else {
				bad("certs.listen", "%v", err)
			}
		}
	}
	for _, d := range []struct {
		key string
		v   duration
	}{{"certs.max_age", c.Certs.MaxAge}, {"certs.min_age", c.Certs.MinAge}, {"certs.not_found_max_age", c.Certs.NotFoundMaxAge}} {
		if d.v < duration(time.Second) {
			bad(d.key, "%v is shorter than 1s", time.Duration(d.v))
		}
	}
	if c.Certs.MinAge > c.Certs.MaxAge {
		bad("certs.min_age", "%v is longer than certs.max_age %v", time.Duration(c.Certs.MinAge), time.Duration(c.Certs.MaxAge))
	}
	if c.Admin.Enabled {
		if err := certserver.CheckLoopback(c.Admin.Listen); err != nil && !(c.Admin.AllowNonLoopback && errors.Is(err, certserver.ErrNotLoopback)) {
			if errors.Is(err, certserver.ErrNotLoopback) {
				bad("admin.listen", "%v; the admin token and private keys travel over this endpoint: use a loopback address, or set admin.allow_non_loopback = true", err)
			} else {
				bad("admin.listen", "%v", err)
			}
		}
	}
	if c.Admin.MaxBody < 1024 {
		bad("admin.max_body", "%d bytes is too small (at least 1024)", c.Admin.MaxBody)
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "%q is not one of text, json", c.Log.Format)
	}
	return errors.Join(errs...)
}

// duration is a TOML string holding a Go duration ("10m", "1h30m").
type duration time.Duration

func (d *duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q: write it like \"90s\", \"10m\" or \"1h30m\"", b)
	}
	if v < 0 {
		return fmt.Errorf("duration %q is negative", b)
	}
	*d = duration(v)
	return nil
}

func (d duration) String() string { return time.Duration(d).String() }

// fileMode is a TOML octal permission: a string ("0660") or an octal
// integer (0o660).
type fileMode fs.FileMode

func (m *fileMode) UnmarshalTOML(v any) error {
	var n uint64
	switch v := v.(type) {
	case string:
		p, err := strconv.ParseUint(strings.TrimPrefix(v, "0o"), 8, 32)
		if err != nil {
			return fmt.Errorf("invalid file mode %q: write it in octal, like \"0660\"", v)
		}
		n = p
	case int64:
		if v < 0 {
			return fmt.Errorf("invalid file mode %d", v)
		}
		n = uint64(v)
	default:
		return fmt.Errorf("invalid file mode %v: write it in octal, like \"0660\"", v)
	}
	if n == 0 || n > 0o777 {
		return fmt.Errorf("invalid file mode %#o: only permission bits (0001 to 0777) are allowed; write it in octal, like \"0660\"", n)
	}
	*m = fileMode(n)
	return nil
}

func (m fileMode) String() string { return fmt.Sprintf("%#o", uint32(m)) }

// std returns d as a time.Duration.
func (d duration) std() time.Duration { return time.Duration(d) }
