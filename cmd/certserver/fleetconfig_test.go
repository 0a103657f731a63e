package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestFleetConfig: [fleet] needs exactly one of database_url and
// database_url_file, has its defaults, and a file without the section runs
// no fleet.
func TestFleetConfig(t *testing.T) {
	const pw = "s3cr3t-pw"
	tests := []struct {
		desc  string
		doc   string
		want  string // substring of the error; "" for none
		check func(t *testing.T, c config)
	}{
		{desc: "no [fleet]: a single host", doc: "", check: func(t *testing.T, c config) {
			if c.fleetEnabled() || c.Fleet.HostName != "" {
				t.Errorf("fleet enabled %v, host name %q; want off", c.fleetEnabled(), c.Fleet.HostName)
			}
		}},
		{desc: "defaults", doc: "[store]\nkey_encryption_key_file = \"/etc/certserver/kek\"\n[fleet]\ndatabase_url = \"postgres://cs:" + pw + "@db:5432/cs\"\n", check: func(t *testing.T, c config) {
			h, _ := os.Hostname()
			if !c.fleetEnabled() || c.Fleet.PoolSize != 10 || !c.Fleet.Renew || c.Fleet.HostName != h || c.Fleet.LeaseTTL.std() != 2*time.Minute {
				t.Errorf("fleet %+v, want pool 10, renew, host name %q, lease_ttl 2m", c.Fleet, h)
			}
		}},
		{desc: "every key", doc: "[store]\nkey_encryption_key_file = \"/etc/certserver/kek\"\n[fleet]\ndatabase_url_file = \"/etc/certserver/database.url\"\nhost_name = \"edge-7\"\nlease_ttl = \"30s\"\npool_size = 4\nrenew = false\n",
			check: func(t *testing.T, c config) {
				f := c.Fleet
				if f.DatabaseURLFile != "/etc/certserver/database.url" || f.HostName != "edge-7" || f.LeaseTTL.std() != 30*time.Second || f.PoolSize != 4 || f.Renew {
					t.Errorf("fleet %+v", f)
				}
			}},
		{desc: "key=value form", doc: "[store]\nkey_encryption_key_file = \"/etc/certserver/kek\"\n[fleet]\ndatabase_url = \"host=db user=cs password=" + pw + "\"\n"},
		{desc: "section without a database", doc: "[store]\nkey_encryption_key_file = \"/etc/certserver/kek\"\n[fleet]\nhost_name = \"a\"\n", want: "fleet.database_url: [fleet] needs the PostgreSQL database"},
		{desc: "both", doc: "[store]\nkey_encryption_key_file = \"/etc/certserver/kek\"\n[fleet]\ndatabase_url = \"postgres://db/cs\"\ndatabase_url_file = \"/x\"\n", want: "both set"},
		{desc: "not postgres", doc: "[store]\nkey_encryption_key_file = \"/etc/certserver/kek\"\n[fleet]\ndatabase_url = \"mysql://cs:" + pw + "@db/cs\"\n", want: `scheme "mysql"`},
		{desc: "not a connection string", doc: "[store]\nkey_encryption_key_file = \"/etc/certserver/kek\"\n[fleet]\ndatabase_url = \"" + pw + "\"\n", want: "neither a postgres:// URL"},
		{desc: "pool too small", doc: "[store]\nkey_encryption_key_file = \"/etc/certserver/kek\"\n[fleet]\ndatabase_url = \"postgres://db/cs\"\npool_size = 1\n", want: "fleet.pool_size: 1 is not from 2 to 1000"},
		{desc: "host name with a space", doc: "[store]\nkey_encryption_key_file = \"/etc/certserver/kek\"\n[fleet]\ndatabase_url = \"postgres://db/cs\"\nhost_name = \"a b\"\n", want: "fleet.host_name"},
		{desc: "no key-encryption key", doc: "[fleet]\ndatabase_url = \"postgres://db/cs\"\n", want: "store.key_encryption_key_file: is required with [fleet]"},
		{desc: "unknown key", doc: "[store]\nkey_encryption_key_file = \"/etc/certserver/kek\"\n[fleet]\ndatabase_url = \"postgres://db/cs\"\npassword = \"x\"\n", want: `unknown key "fleet.password" (keys of [fleet]: database_url, database_url_file, host_name, lease_ttl, pool_size, renew)`},
		{desc: "lease too short", doc: "[store]\nkey_encryption_key_file = \"/etc/certserver/kek\"\n[fleet]\ndatabase_url = \"postgres://db/cs\"\nlease_ttl = \"1s\"\n", want: "fleet.lease_ttl: 1s is not from 3s to 1h0m0s"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			c := defaultConfig()
			err := parseConfig(tt.doc, &c)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("error %v, want none", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), pw) {
				t.Errorf("the error shows the password: %v", err)
			}
			if tt.check != nil {
				tt.check(t, c)
			}
		})
	}
}

// TestDatabaseURLNeverShown: the configuration printed every way a log
// line or a status answer could print it does not show the URL.
func TestDatabaseURLNeverShown(t *testing.T) {
	const pw = "s3cr3t-pw"
	c := defaultConfig()
	if err := parseConfig("[store]\nkey_encryption_key_file = \"/k\"\n[fleet]\ndatabase_url = \"postgres://cs:"+pw+"@db/cs\"\n", &c); err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "fleet", c.Fleet, "url", c.Fleet.DatabaseURL)
	slog.New(slog.NewTextHandler(&logged, nil)).Info("config", "fleet", c.Fleet, "url", c.Fleet.DatabaseURL)
	js, err := json.Marshal(c.Fleet)
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{
		fmt.Sprintf("%v %+v %#v %s", c, c.Fleet, c.Fleet, c.Fleet.DatabaseURL),
		logged.String(), string(js),
	} {
		if strings.Contains(out, pw) {
			t.Errorf("the password shows in %s", out)
		}
	}
	if u, err := c.Fleet.databaseURL(); err != nil || !strings.Contains(u, pw) {
		t.Errorf("databaseURL() = %q, %v; want the URL itself", u, err)
	}
}

// TestDatabaseURLFile: the file holds the URL alone on one line, as a
// token file does; errors name the file and never show what it holds.
func TestDatabaseURLFile(t *testing.T) {
	const pw = "s3cr3t-pw"
	dir := t.TempDir()
	tests := []struct {
		desc    string
		content string
		want    string // the URL, or a substring of the error
		fails   bool
	}{
		{desc: "one line with a newline", content: "postgres://cs:" + pw + "@db/cs\n", want: "postgres://cs:" + pw + "@db/cs"},
		{desc: "two lines", content: "postgres://cs:" + pw + "@db/cs\n# comment\n", want: "holds 2 lines", fails: true},
		{desc: "empty", content: "\n", want: "empty", fails: true},
		{desc: "not postgres", content: "https://cs:" + pw + "@db/cs\n", want: `scheme "https"`, fails: true},
	}
	for i, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprint(i))
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			u, err := fleetConfig{DatabaseURLFile: path}.databaseURL()
			if !tt.fails {
				if err != nil || u != tt.want {
					t.Fatalf("databaseURL() = %q, %v; want %q", u, err, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("error %v, want one naming %s and containing %q", err, path, tt.want)
			}
			if strings.Contains(err.Error(), pw) {
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}
	if _, err := (fleetConfig{DatabaseURLFile: filepath.Join(dir, "missing")}).databaseURL(); err == nil || !strings.Contains(err.Error(), "fleet.database_url_file") {
		t.Errorf("missing file: error %v, want one naming fleet.database_url_file", err)
	}
}

// TestSharedOptionsPoolSize: pool_size bounds every connection a host
// opens to the fleet's database: the pool gets one less, for the
// connection that listens beside it.
func TestSharedOptionsPoolSize(t *testing.T) {
	for _, size := range []int{minFleetPoolSize, defaultFleetPoolSize, maxFleetPoolSize} {
		opts := sharedOptions(fleetConfig{PoolSize: size}, "postgres://db/cs", slog.New(slog.DiscardHandler))
		if got := int(opts.MaxConns) + 1; got != size {
			t.Errorf("pool_size %d: the pool's %d connections and the listening one make %d, want %d", size, opts.MaxConns, got, size)
		}
	}
}

// TestRenews: whether a host renews is decided in one place: a CA must be
// configured, and on a fleet host renew must be on.
func TestRenews(t *testing.T) {
	for _, tc := range []struct {
		desc      string
		directory string
		fleet     bool
		renew     bool
		want      bool
	}{
		{"single host with a CA", "https://ca.test/dir", false, false, true},
		{"single host without a CA", "", false, false, false},
		{"fleet host with renew on", "https://ca.test/dir", true, true, true},
		{"fleet host with renew off", "https://ca.test/dir", true, false, false},
		{"fleet host with renew on without a CA", "", true, true, false},
	} {
		var c config
		c.ACME.Directory = tc.directory
		c.Fleet.Renew = tc.renew
		if tc.fleet {
			c.Fleet.DatabaseURL = "postgres://db/cs"
		}
		if got := c.renews(); got != tc.want {
			t.Errorf("%s: renews %v, want %v", tc.desc, got, tc.want)
		}
	}
}
