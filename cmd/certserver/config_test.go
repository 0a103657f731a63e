package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		desc  string
		doc   string
		want  string // substring of the error; "" for none
		check func(t *testing.T, c config)
	}{
		{desc: "empty file gives the defaults", doc: "", check: func(t *testing.T, c config) {
			if c.Store.Path != "/var/lib/certserver" || c.Certs.Socket != "/run/certserver/certs.sock" || c.Certs.Listen != "" ||
				c.Certs.SocketMode != 0o660 || c.Certs.MaxAge.std() != 10*time.Minute || c.Certs.MinAge.std() != 10*time.Second ||
				!c.Admin.Enabled || c.Admin.Listen != "127.0.0.1:9400" || c.Admin.MaxBody != 1<<20 ||
				c.Log.Level != "info" || c.Log.Format != "text" {
				t.Errorf("defaults: %+v", c)
			}
		}},
		{desc: "every key", doc: `
[store]
path = "/srv/certs"
[certs]
socket = ""
socket_mode = "0640"
socket_group = "www-data"
listen = "127.0.0.1:9401"
allow_non_loopback = false
max_age = "5m"
min_age = "5s"
not_found_max_age = "3s"
[admin]
enabled = true
listen = "[::1]:9400"
allow_non_loopback = false
token_file = "/etc/certserver/admin.token"
max_body = 2048
[log]
level = "debug"
format = "json"
`, check: func(t *testing.T, c config) {
			if c.Store.Path != "/srv/certs" || c.Certs.Socket != "" || c.Certs.SocketMode != 0o640 || c.Certs.SocketGroup != "www-data" ||
				c.Certs.Listen != "127.0.0.1:9401" || c.Certs.MaxAge.std() != 5*time.Minute || c.Certs.MinAge.std() != 5*time.Second ||
				c.Certs.NotFoundMaxAge.std() != 3*time.Second || c.Admin.Listen != "[::1]:9400" ||
				c.Admin.TokenFile != "/etc/certserver/admin.token" || c.Admin.MaxBody != 2048 || c.Log.Level != "debug" || c.Log.Format != "json" {
				t.Errorf("parsed: %+v", c)
			}
		}},
		{desc: "octal integer mode", doc: "[certs]\nsocket_mode = 0o600\n", check: func(t *testing.T, c config) {
			if c.Certs.SocketMode != 0o600 {
				t.Errorf("mode %v", c.Certs.SocketMode)
			}
		}},
		{desc: "unknown key", doc: "[certs]\nsockt = \"/x\"\n", want: `unknown key "certs.sockt" (keys of [certs]: socket,`},
		{desc: "unknown top-level key", doc: "verbose = true\n", want: `unknown key "verbose" (sections: store, certs, admin, log)`},
		{desc: "unknown section", doc: "[acme]\nemail = \"x\"\n", want: `unknown key "acme"`},
		{desc: "bad duration", doc: "[certs]\nmax_age = \"10 minutes\"\n", want: `"certs.max_age"`},
		{desc: "duration as a number", doc: "[certs]\nmin_age = 10\n", want: "certs.min_age"},
		{desc: "negative duration", doc: "[certs]\nmin_age = \"-1s\"\n", want: "certs.min_age"},
		{desc: "tiny duration", doc: "[certs]\nnot_found_max_age = \"1ms\"\n", want: "certs.not_found_max_age: 1ms is shorter than 1s"},
		{desc: "min above max", doc: "[certs]\nmin_age = \"1h\"\n", want: "certs.min_age: 1h0m0s is longer than certs.max_age"},
		{desc: "decimal mode", doc: "[certs]\nsocket_mode = 660\n", want: "certs.socket_mode"},
		{desc: "mode not octal", doc: "[certs]\nsocket_mode = \"rw-rw----\"\n", want: "certs.socket_mode"},
		{desc: "wrong type", doc: "[admin]\nmax_body = \"1MiB\"\n", want: "admin.max_body"},
		{desc: "nowhere to listen", doc: "[certs]\nsocket = \"\"\n", want: "certs.socket"},
		{desc: "certs on every interface", doc: "[certs]\nlisten = \"0.0.0.0:9401\"\n", want: "certs.listen"},
		{desc: "certs on a bare port", doc: "[certs]\nlisten = \":9401\"\n", want: "private keys travel over this endpoint"},
		{desc: "certs non-loopback allowed", doc: "[certs]\nlisten = \"10.0.0.1:9401\"\nallow_non_loopback = true\n"},
		{desc: "admin on a public address", doc: "[admin]\nlisten = \"192.0.2.1:9400\"\n", want: "admin.listen"},
		{desc: "admin disabled skips its checks", doc: "[admin]\nenabled = false\nlisten = \"192.0.2.1:9400\"\n"},
		{desc: "small max body", doc: "[admin]\nmax_body = 10\n", want: "admin.max_body"},
		{desc: "bad log level", doc: "[log]\nlevel = \"verbose\"\n", want: `log.level: "verbose"`},
		{desc: "bad log format", doc: "[log]\nformat = \"xml\"\n", want: `log.format: "xml"`},
		{desc: "several problems at once", doc: "[log]\nformat = \"xml\"\nlevel = \"loud\"\n", want: "log.level"},
		{desc: "TOML syntax", doc: "[certs\n", want: "toml: line 2"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			c := defaultConfig()
			err := parseConfig(tc.doc, &c)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("error: %v", err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
			if tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}

func TestLoadConfigNamesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.toml")
	if err := os.WriteFile(path, []byte("[log]\nlevel = \"x\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := loadConfig(path)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "log.level") {
		t.Fatalf("error %v, want it to name the file and the key", err)
	}
}

// The sample configuration shipped in deploy/ must parse and hold every key.
func TestSampleConfig(t *testing.T) {
	b, err := os.ReadFile("../../deploy/certserver.toml")
	if err != nil {
		t.Fatal(err)
	}
	c := defaultConfig()
	if err := parseConfig(string(b), &c); err != nil {
		t.Fatalf("deploy/certserver.toml: %v", err)
	}
	for section, keys := range knownKeys() {
		if section == "" {
			continue
		}
		for _, k := range keys {
			if !strings.Contains(string(b), "\n"+k+" =") && !strings.Contains(string(b), "\n# "+k+" =") {
				t.Errorf("deploy/certserver.toml does not document %s.%s", section, k)
			}
		}
	}
}
